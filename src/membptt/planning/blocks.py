"""Block planning: the paper's recurrence on blocks of ``k`` steps, priced as fused calls.

A fused executor runs a chain of consecutive stored internal states as one multi-step call with
graph (one ``nn.LSTM`` call) and backpropagates it in one autograd call; such a call of ``L``
steps is not ``L`` stepped calls, neither in time nor in bytes. Block planning prices what is
run: a **block** of ``k`` consecutive steps is one macro-step of the paper's recurrences (Gruslys et al. 2016), and the
existing exact engine (:mod:`membptt.planning.dp`, HSM/ISM/MSM families) solves the problem on
``n = ceil(T / k)`` blocks. Block ``j`` holds steps ``(j-1)k+1 .. min(jk, T)``: every block has
``k`` steps except a *ragged* last one of ``r = T - (n-1)k`` steps.

**Prices** (:class:`~membptt.planning.prices.Prices`: from ``costs.segments`` or, without
segments, ``k`` times the step model: forward ``k * forward_graph``, backward ``k * backward``):

* a block's forward with graph (an internal block or the core block) is one fused call,
  ``forward[k]``; its backward one call, ``backward[k]``;
* a run of ``y`` graph-free blocks is one fused run of ``y * k`` steps. The engine needs it as
  ``run_fixed + y * run_per_step``: the line is fitted (least squares, intercept >= 0) on the
  measured ``run_lengths`` that lie in the range of run lengths the plan can use,
  ``[k, (n-1)k]`` (widened to the nearest measured points when fewer than two lie inside), and
  its worst relative residual on those points is reported in ``Plan.info["run_fit"]``; nothing
  is assumed affine silently. Without segments the step model's run cost is used exactly;
* sizes: a stored block costs ``stored_bytes[k]`` (its input state's storage included) or
  ``beta_bytes[k]`` when its input state is held anyway (the paper's beta form, at block level);
  in hidden-state units these are rounded up (``ceil(bytes / hidden_bytes)``), as budget.py
  does for steps. Without segments: ``alpha + (k-1) beta`` and ``k beta`` units (``beta =
  alpha`` without the beta form), the step-level charges of ``k`` stored steps.

**The ragged last block** is charged like the others by the DP (sizes: the larger of the
``k``- and ``r``-step values, an upper bound for all blocks; times: the ``k``-step values), so
the DP is exact for the uniform block model. The plan's prediction (``Plan.prediction``) is the
one replay of :func:`membptt.planning.replay.predict` on the expanded ops with the block bounds
as segment ends: every call priced at its real length (piecewise-linear interpolation of the
measurements), which is what the choice of ``k`` compares.

**Budgets** (see :mod:`membptt.planning.budget`): the block DP gets the memory left for stored
states. A byte or percentage budget minus the working set of a ``k``-step core
(``segments.working_bytes[k]``; without segments ``costs.working_bytes`` plus the ``k - 1``
internal states the core block stores beyond its last step), or, when no working set is known,
minus those ``k - 1`` stored steps' bytes only. A unit budget is the paper's accounting (one
step's working core free), so the core block's first ``k - 1`` steps are taken out of it:
``stored_units(k - 1)``. A ``k`` whose remainder is below the strategy's minimum is infeasible.
``Plan.predicted_peak_bytes`` (the replay: stored states at each core plus that core's
working set) is at most the simulated block-level stored peak plus the ``k``-step working set,
which the DP keeps within the budget. The working set counts a cursor and an incoming
gradient beside every core; the replay does not count them twice where the plan holds them
itself (a core that starts from a stored state; before the first backward no gradient
exists), so with a byte budget up to :data:`EXTRA_SLOTS` more slots are tried and the most
whose replayed peak stays inside the budget are taken: at the measured peak of ``K``
checkpointed segments the checkpoint's own schedule (``K`` blocks, every bound stored) is
admitted (``tests/test_segments.py``). HSM stores no internal states, so its cores are lone
and it reserves a lone core's working set (``segments.core_bytes``); MSM's own block DP may
link cores to stored internal blocks and reserves the linked one's (``working_bytes``), and
with measured segments and a byte budget MSM also tries HSM's block plans (an HSM plan is an
MSM plan), so MSM's front door is never below HSM's.

**Expansion** to step-level ops, which the simulator validates and the executor runs:

=============================  ==============================================================
block op                       step ops (block ``b`` = steps ``a..c``)
=============================  ==============================================================
``Forward(b)``                 ``Forward(i)`` for ``i`` in ``a..c``
``Forward(b, "hidden")``       the same, the last one ``keep="hidden"``
``Forward(b, "internal")``     ``Forward(i, "internal")`` for every ``i``
``Forward(b, "core")``         ``Forward(i, "internal")`` for ``a..c-1``, ``Forward(c, "core")``
``Backward(b)``                ``Backward(c) .. Backward(a)``; after a core block also
                               ``Drop(c-1, "internal") .. Drop(a, "internal")``
``Drop(b, "hidden")``          ``Drop(c, "hidden")``
``Drop(b, "internal")``        ``Drop(c, "internal") .. Drop(a, "internal")`` (descending, so no
                               remaining state's input is freed before it)
=============================  ==============================================================

With unit prices, ``k = 1`` is the step-level DP exactly; for ``k > 1`` a block plan is a valid
step-level plan within the same unit budget (its core block's extra steps are reserved), so its
forward count is never below the step optimum ``C(t, m)`` (``tests/test_blocks.py``;
``benchmarks/bench_blocks.py`` prints the gap). An HSM block plan stores its core block's
first ``k - 1`` steps as internal states, so at step level it is a mixed (MSM-family) plan:
its bound is ``C_MSM``, and it can use fewer forwards than ``C_HSM``.

**Choice of k** (``planner="blocks"`` without ``block``): every measured length ``k <= T`` of
``costs.segments`` and every uniform length ``ceil(T / K)``, ``K = 2 .. 128`` (the schedule of
``torch.utils.checkpoint`` over ``K`` balanced segments is then always a candidate: stored
block bounds, each block recomputed once with graph; its calls priced at their real length:
times interpolated, bytes at the next measured length) (powers of two up to ``T`` without
segments) is solved exactly and the feasible ``k`` with the
least predicted time wins (ties: lower predicted peak, then smaller ``k``). The candidates'
predictions are in ``Plan.info["candidates"]``. A ``k`` whose DP table exceeds a planning limit
(:mod:`membptt.planning.limits`: bytes or work; measured float costs prune less, so ``k = 1``
with a generous budget can need more work than the limit) is left out and marked ``refused``
there; the plan is the best of the others (only when every ``k`` is refused is the plan
refused, with ``PlanTooLarge``).

Caveats: a plan can push internal blocks ``j`` and ``j + 1`` back to back; they are priced as
two calls of ``k`` steps (an executor may run them as one chain of ``2k`` steps). The DP is
exact for the block model, not for step-level plans with fused segments of any length.
"""

from __future__ import annotations

from . import dp, limits
from .budget import Budget, too_small, units_for
from .costs import CostModel
from .errors import PlanTooLarge
from .ops import Backward, Drop, Forward, Op
from .plan import Plan
from .prices import Prices
from .problem import MinimumBudget, Problem
from .replay import predict, simulate_ops
from .strategies import emit_from_table


def fit_runs(prices: Prices, k: int, n: int) -> tuple[float, float, dict]:
    """``(run_fixed, run_per_block, info)`` of the engine's run line for blocks of ``k`` steps
    (module docstring: exact for the step model, a reported least-squares fit on segments)."""
    if prices.seg is None:
        c = prices.costs
        return c.run_fixed, k * c.run_per_step, {"kind": "step model (exact)",
                                                 "worst_rel_residual": 0.0}
    seg = prices.seg
    lo, hi = k, max(n - 1, 1) * k
    pts = list(zip(seg.run_lengths, seg.run_seconds))
    used = [p for p in pts if lo <= p[0] <= hi]
    rest = sorted((p for p in pts if not lo <= p[0] <= hi),
                  key=lambda p: (lo - p[0]) / lo if p[0] < lo else (p[0] - hi) / hi)
    while len(used) < 2 and rest:
        used.append(rest.pop(0))
    used.sort()
    xs = [float(x) for x, _ in used]
    ys = [float(y) for _, y in used]
    through_origin = (sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs))
    a, b = 0.0, through_origin
    if len(used) >= 2:
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        icept = my - slope * mx
        if icept >= 0 and slope > 0:
            a, b = icept, slope
    worst = max(abs(a + b * x - y) / y for x, y in zip(xs, ys))
    return a, k * b, {"kind": "least-squares line" if a > 0 else "line through 0",
                      "run_fixed": a, "run_per_step": b, "lengths_used": [int(x) for x in xs],
                      "lengths_occurring": [lo, hi], "worst_rel_residual": worst}


# -- expansion and pricing ---------------------------------------------------------------------------

def block_bounds(seq_len: int, k: int) -> list[int]:
    """``bounds[j]`` = last step of block ``j`` (``bounds[0] = 0``); the last block is ragged."""
    n = -(-seq_len // k)
    return [min(j * k, seq_len) for j in range(n + 1)]


def expand(block_ops, bounds: list[int]) -> list[Op]:
    """Step-level ops of a block plan (the table in the module docstring)."""
    out: list[Op] = []
    core = set()
    for op in block_ops:
        j = op.step
        a, c = bounds[j - 1] + 1, bounds[j]
        if isinstance(op, Forward):
            if op.keep in (None, "hidden"):
                out += [Forward(i) for i in range(a, c)] + [Forward(c, op.keep)]
            elif op.keep == "internal":
                out += [Forward(i, "internal") for i in range(a, c + 1)]
            else:
                out += [Forward(i, "internal") for i in range(a, c)] + [Forward(c, "core")]
                core.add(j)
        elif isinstance(op, Backward):
            out += [Backward(i) for i in range(c, a - 1, -1)]
            if j in core:
                core.discard(j)
                out += [Drop(i, "internal") for i in range(c - 1, a - 1, -1)]
        elif op.kind == "hidden":
            out.append(Drop(c, "hidden"))
        else:
            out += [Drop(i, "internal") for i in range(c, a - 1, -1)]
    return out


# -- the block plan -----------------------------------------------------------------------------------

def reserve_bytes(prices: Prices, k: int, r: int, lone: bool = False) -> tuple[int, str]:
    """Bytes a byte budget sets aside beyond stored blocks (module docstring, Budgets).
    ``lone``: the strategy stores no internal states (HSM), so every core is backpropagated
    alone and its working set is that of a lone core (``core``, not the linked chains'
    ``working``; the replay prices it so)."""
    w = [(prices.core if lone else prices.working)(L) for L in (k, r)]
    if w[0] is not None:
        return max(w), f"the {k}-step working set ({max(w)} B)"
    res = max(prices.stored_bytes(k - 1), prices.stored_bytes(r - 1))
    return res, f"the core block's first {k - 1} stored steps ({res} B; no working set known)"


def reserve_units(prices: Prices, k: int, r: int) -> tuple[int, str]:
    """Units a unit budget sets aside: the core block's first ``k - 1`` steps."""
    res = max(prices.stored_units(k - 1), prices.stored_units(r - 1))
    return res, f"the core block's first {k - 1} steps ({res} units)"


def _family(pb: Problem, a_block: int, b_block: int) -> tuple[dp.Family, int]:
    """The strategy's DP family on blocks (its registry entry's ``dp_family``) and the units
    of one slot (the smallest block-DP memory: one internal block for ISM, the start state
    otherwise)."""
    return pb.strategy.dp_family(a_block, b_block)


def _lone(pb: Problem) -> bool:
    """Whether the strategy's block DP stores no internal states (its cores are lone)."""
    return not _family(pb, 1, 1)[0].internal


def _hsm_too(pb: Problem) -> bool:
    """Whether HSM block plans are candidates beside the strategy's own: for a strategy that
    contains HSM's plans (MSM, whose block DP stores internal states too) with a working set
    known per length, where a lone core's working set is below a linked one's."""
    return (pb.strategy.name == "msm" and pb.costs.segments is not None
            and pb.costs.has_sizes)


def _block_budget(pb: Problem, k: int, r: int, prices: Prices, lone: bool):
    """(units for the block DP or None when nothing is left, reserve, reserve note)."""
    req = pb.req
    if req.nbytes is not None:
        reserve, what = reserve_bytes(prices, k, r, lone)
        avail = req.nbytes - reserve
        if avail < 0:
            return None, reserve, what
        return units_for(avail, prices.hb, pb.ci), reserve, what
    reserve, what = reserve_units(prices, k, r)
    return req.units - reserve, reserve, what


def _shape(pb: Problem, k: int, prices: Prices):
    T = pb.seq_len
    bounds = block_bounds(T, k)
    n = len(bounds) - 1
    r = T - bounds[n - 1]
    aB = max(prices.stored_units(k), prices.stored_units(r))
    bB = max(prices.beta_units(k), prices.beta_units(r))
    return bounds, n, r, aB, bB


def _solve_block(pb: Problem, k: int, prices: Prices, hsm: bool = False) -> dict:
    """Solve one ``k`` exactly; a dict describing the candidate (``plan`` set when feasible).
    ``hsm``: on BPTT-HSM's family whatever the strategy (an HSM plan is an MSM plan: its
    cores are lone, so a byte budget reserves a lone core's working set, not a linked one's)."""
    T = pb.seq_len
    bounds, n, r, aB, bB = _shape(pb, k, prices)
    run_fixed, run_per_block, fit = fit_runs(prices, k, n)
    sizes = {}
    if prices.sized:
        sizes = dict(hidden_bytes=prices.hb,
                     internal_bytes=max(prices.stored_bytes(k), prices.stored_bytes(r)),
                     beta_bytes=max(prices.beta_bytes(k), prices.beta_bytes(r)))
    bcosts = CostModel(run_fixed=run_fixed, run_per_step=run_per_block,
                       forward_graph=prices.forward(k), backward=prices.backward(k), **sizes)
    lone = hsm or _lone(pb)
    m, reserve, what = _block_budget(pb, k, r, prices, lone)
    family, slot = (dp.hsm_family(), 1) if hsm else _family(pb, aB, bB)
    cand = {"k": k, "family": family.name, "blocks": n, "last_block": r, "block_alpha": aB,
            "block_beta": bB, "reserve": reserve, "reserve_of": what, "block_memory": m, "run_fit": fit,
            "minimum_block_memory": slot}
    if m is None or m < slot:
        cand["feasible"] = False
        return cand
    mem = m // slot
    # the reserve counts a cursor and an incoming gradient beside every core; the replay
    # does not where the plan holds them itself (a core starting from a stored state, the
    # first backward), so up to two more hidden-state slots may fit: the most that the
    # replay's peak keeps inside the byte budget are taken
    extra = EXTRA_SLOTS if (req_bytes := pb.req.nbytes) is not None and slot == 1 \
        and prices.working(k) is not None else 0
    ends = tuple(bounds[1:])
    try:
        tab = dp.table(n, mem + extra, family, bcosts, max_bytes=pb.max_table_bytes,
                       max_work=pb.max_dp_work)
        for use in range(mem + extra, mem - 1, -1):
            if use > mem and tab.cost(n, use) >= tab.cost(n, use - 1):
                continue  # that slot buys nothing: one fewer plans as fast
            block_ops = emit_from_table(tab, n, use, max_ops=pb.max_ops)
            ops = expand(block_ops, bounds)
            limits.check_ops(len(ops), pb.max_ops, strategy=pb.name, seq_len=T)
            pred = predict(ops, T, pb.costs, alpha=pb.alpha, beta=pb.beta, segment_ends=ends)
            if use == mem or pred.peak_bytes <= req_bytes:
                break
    except PlanTooLarge as e:  # this k is too much work or memory: the others may fit
        cand.update(feasible=False, refused=str(e))
        return cand
    bsim = simulate_ops(block_ops, n, alpha=aB, beta=None if slot > 1 else bB,
                        count_initial=pb.ci, costs=bcosts)
    if bsim.peak_units > use * slot:  # a planner bug, never a user error
        raise AssertionError(f"block plan exceeds its budget: {bsim.peak_units} > {use * slot}")
    if use > mem:  # slots beyond the reserve's, inside the budget by the replay
        cand["block_memory"] = use * slot
        cand["reserve_of"] += (f", plus {use - mem} slot(s) for the cursor or gradient it "
                               "counts where the plan holds that state itself")
    mem = use
    cand.update(feasible=True, ops=tuple(ops), block_ops=tuple(block_ops), block_sim=bsim,
                block_dp_cost=tab.cost(n, mem), block_dp_memory=mem,
                dp_model_cost=tab.cost(n, mem) + n * bcosts.backward,
                working_bytes=None if prices.working(k) is None
                else reserve_bytes(prices, k, r, lone)[0],
                prediction=pred, predicted_cost=pred.total_cost,
                predicted_peak_bytes=pred.peak_bytes)
    return cand


EXTRA_SLOTS = 2
"""Hidden-state slots a byte budget may hold beyond what its reserve leaves (the cursor and
the incoming gradient a working set counts), each taken only when the replay's peak stays
inside the budget."""

UNIFORM_SEGMENTS = 128
"""The largest ``K`` whose uniform length ``ceil(T / K)`` is a block candidate (the
checkpoint fronts users compare with run ``K`` up to 128)."""


def uniform_lengths(seq_len: int, ks) -> set[int]:
    """``{ceil(T / K) for K in ks}``: the segment lengths of ``K`` balanced segments (the
    block candidates here, and the lengths the probe measures)."""
    return {-(-seq_len // K) for K in ks}


def candidate_lengths(pb: Problem) -> list[int]:
    """The block lengths tried: ``pb.block`` when fixed (``k >= T``: one block), else every
    measured segment length ``k <= T`` and every uniform length ``ceil(T / K)`` for ``K = 2 ..
    128`` (so ``K`` balanced segments, ``torch.utils.checkpoint``'s schedule, is always a
    candidate; priced from the measured lengths, :meth:`SegmentCosts.at`); powers of two
    without segments."""
    T = pb.seq_len
    if pb.block is not None:
        return [min(pb.block, T)]
    if pb.costs.segments is not None:
        measured = {L for L in pb.costs.segments.lengths if L <= T}
        return sorted(measured | uniform_lengths(T, range(2, min(UNIFORM_SEGMENTS, T) + 1)))
    return [2**e for e in range(T.bit_length()) if 2**e <= T]


def _prices(pb: Problem) -> Prices:
    prices = Prices(pb.costs, pb.alpha, pb.beta)
    if not prices.sized and pb.alpha is None and pb.strategy.needs_alpha:
        raise ValueError(f"strategy {pb.name!r} needs alpha (internal-state size in "
                         "hidden-state units): pass alpha=... or costs with state sizes")
    return prices


def minimum(pb: Problem) -> MinimumBudget:
    """The least budget over the candidate lengths: least bytes when sizes are known, else
    least units (the rule :func:`plan` refuses by)."""
    prices = _prices(pb)
    best = None
    for k in candidate_lengths(pb):
        _, _, r, aB, bB = _shape(pb, k, prices)
        slot = _family(pb, aB, bB)[1]
        units = reserve_units(prices, k, r)[0] + slot
        nbytes = None
        if prices.sized:
            nbytes = reserve_bytes(prices, k, r, _lone(pb))[0] + max(0, slot - pb.ci) * prices.hb
            if _hsm_too(pb):  # the HSM plans on the same blocks (bytes budgets only)
                nbytes = min(nbytes, reserve_bytes(prices, k, r, True)[0]
                             + max(0, 1 - pb.ci) * prices.hb)
        cand = MinimumBudget(pb.name, pb.seq_len, units, nbytes, k, "blocks")
        if best is None or (nbytes if prices.sized else units) < (
                best.bytes if prices.sized else best.units):
            best = cand
    return best


def plan(pb: Problem) -> Plan:
    """The block plan of least predicted time over the candidate lengths (module docstring)."""
    if pb.options:
        raise ValueError(f"block planning takes no strategy options; got {sorted(pb.options)}")
    prices = _prices(pb)
    req = pb.req
    if req is None:
        raise ValueError("block planning needs a memory budget")
    if req.nbytes is not None and not prices.sized:
        raise ValueError(f"memory budget {req.text!r} is in bytes, which needs state sizes: "
                         "pass costs with hidden_bytes and internal_bytes (or segments)")
    ks = candidate_lengths(pb)
    cands = [_solve_block(pb, k, prices) for k in ks]
    if _hsm_too(pb) and req.nbytes is not None:
        cands += [_solve_block(pb, k, prices, hsm=True) for k in ks]
    ok = [c for c in cands if c["feasible"]]
    refused = [c for c in cands if c.get("refused")]
    if not ok and refused:
        raise PlanTooLarge(
            f"no block length fits the planning limits for strategy {pb.name!r}, "
            f"seq_len={pb.seq_len}, memory {req.text!r}: "
            + "; ".join(f"k={c['k']}: {c['refused']}" for c in refused))
    if not ok:
        m = minimum(pb)
        ks = [c["k"] for c in cands]
        raise too_small(req, strategy=pb.name, seq_len=pb.seq_len, planner="blocks",
                        minimum_units=m.units,
                        minimum_bytes=m.bytes if req.nbytes is not None else None,
                        what=f", blocks of {ks} steps")
    best = min(ok, key=lambda c: (c["predicted_cost"], c["predicted_peak_bytes"] or 0, c["k"]))
    k = best["k"]
    T = pb.seq_len
    sim = simulate_ops(best["ops"], T, alpha=pb.alpha or 1, beta=pb.beta,
                       count_initial=pb.ci, costs=pb.costs)
    minus = f"minus {best['reserve_of']} " if best["reserve"] else ""
    budget = Budget(req.text, req.kind, best["block_memory"], req.nbytes,
                    (req.note + "; " if req.note else "") + minus
                    + f"-> {best['block_memory']} units for stored blocks of {k} steps")
    keep = ("k", "family", "feasible", "blocks", "last_block", "block_alpha", "block_beta",
            "block_memory", "block_dp_cost", "dp_model_cost", "predicted_cost",
            "predicted_peak_bytes", "refused")
    info = {"block": k, "prices": prices.source,
            "k_measured": pb.costs.segments is None or k in pb.costs.segments.lengths,
            "block_dp_cost": best["block_dp_cost"], "block_dp_memory": best["block_dp_memory"],
            "block_alpha": best["block_alpha"], "block_beta": best["block_beta"],
            "run_fit": best["run_fit"], "block_stored_peak_bytes": best["block_sim"].peak_bytes,
            "working_bytes": best["working_bytes"],
            "candidates": [{key: c.get(key) for key in keep} for c in cands]}
    return Plan(pb.name, T, best["ops"], pb.alpha, pb.beta, pb.ci, pb.costs, budget, sim, info,
                planner="blocks", block=k, segment_ends=tuple(block_bounds(T, k)[1:]),
                prediction=best["prediction"], units=best["block_sim"].peak_units,
                block_ops=best["block_ops"])
