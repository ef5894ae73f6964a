"""Block planning: the paper's recurrence on blocks of ``k`` steps, priced as fused calls.

A fused executor runs a chain of consecutive stored internal states as one multi-step call with
graph (one ``nn.LSTM`` call) and backpropagates it in one autograd call; such a call of ``L``
steps is not ``L`` stepped calls, neither in time nor in bytes. Block planning prices what is
run: a **block** of ``k`` consecutive steps is one macro-step of PAPER.md's recurrences, and the
existing exact engine (:mod:`membptt.planning.dp`, HSM/ISM/MSM families) solves the problem on
``n = ceil(T / k)`` blocks. Block ``j`` holds steps ``(j-1)k+1 .. min(jk, T)``: every block has
``k`` steps except a *ragged* last one of ``r = T - (n-1)k`` steps.

**Prices** (from ``costs.segments``, :class:`~membptt.planning.costs.SegmentCosts`, or, without
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
  ``beta_bytes[k]`` when its input state is held anyway (PAPER.md's beta form, at block level);
  in hidden-state units these are rounded up (``ceil(bytes / hidden_bytes)``), as budget.py
  does for steps. Without segments: ``alpha + (k-1) beta`` and ``k beta`` units (``beta =
  alpha`` without the beta form), the step-level charges of ``k`` stored steps.

**The ragged last block** is charged like the others by the DP (sizes: the larger of the
``k``- and ``r``-step values, an upper bound for all blocks; times: the ``k``-step values), so
the DP is exact for the uniform block model. The plan's reported prediction
(``Plan.predicted_cost``) replays the chosen plan with every call priced at its real length
(piecewise-linear interpolation of the measurements, :meth:`SegmentCosts.at`), which is what
``block="auto"`` compares.

**Budgets** (see :mod:`membptt.planning.peak`): the block DP gets the memory left for stored
states. A byte or percentage budget minus the working set of a ``k``-step core
(``segments.working_bytes[k]``; without segments ``costs.working_bytes`` plus the ``k - 1``
internal states the core block stores beyond its last step), or, when no working set is known,
minus those ``k - 1`` stored steps' bytes only. A unit budget is the paper's accounting (one
step's working core free), so the core block's first ``k - 1`` steps are taken out of it:
``stored_units(k - 1)``. A ``k`` whose remainder is below the strategy's minimum is infeasible.
``Plan.predicted_peak_bytes`` = simulated stored peak + the ``k``-step working set.

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

**Choice of k** (``block="auto"``): every measured length ``k <= T`` of ``costs.segments``
(powers of two up to ``T`` without segments) is solved exactly and the feasible ``k`` with the
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

import math
from dataclasses import dataclass

from . import dp, limits
from .budget import VALID_FORMS, Budget
from .costs import CostModel
from .ops import Backward, Drop, Forward, Op
from .plan import Plan
from .simulate import BudgetTooSmall, SimResult, simulate_ops
from .strategies import STRATEGIES, emit_from_table

BLOCK_STRATEGIES = ("hsm", "ism", "msm")
BLOCK_DEFAULT = "default"  # "auto" when costs.segments is set, else step-level planning
VALID_BLOCKS = ("'default', 'auto', 'chains', None or an integer block length k >= 1")


def block_arg(block, strategy: str, costs: CostModel):
    """Normalise ``plan(..., block=...)``: None (step level), ``"auto"`` or an int ``k``."""
    if block == BLOCK_DEFAULT:
        return "auto" if costs.segments is not None and strategy in BLOCK_STRATEGIES else None
    if block is None:
        return None
    if block == "chains":
        from .chains import CHAIN_STRATEGIES
        if strategy not in CHAIN_STRATEGIES:
            raise ValueError(f"block='chains' plans BPTT-HSM with fused chains; strategy must "
                             f"be one of {', '.join(CHAIN_STRATEGIES)}, got {strategy!r} (use "
                             "block='auto' for ism and msm)")
        return block
    if block != "auto" and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise ValueError(f"block must be {VALID_BLOCKS}; got {block!r}")
    if strategy not in BLOCK_STRATEGIES:
        raise ValueError(f"block planning (block={block!r}) is defined for the DP strategies "
                         f"{', '.join(BLOCK_STRATEGIES)}, not {strategy!r}; pass block=None")
    return block


# -- prices of fused calls by length -------------------------------------------------------------

class Prices:
    """Times and sizes of fused calls by length: measured (``costs.segments``) or ``L`` times
    the step model. Bytes are rounded up to integers; units are hidden-state units."""

    def __init__(self, costs: CostModel, alpha: int | None, beta: int | None):
        self.costs, self.seg, self.hb = costs, costs.segments, costs.hidden_bytes
        if self.seg is not None and self.hb is None:
            raise ValueError("block planning on costs.segments needs CostModel.hidden_bytes "
                             "(to count segment bytes in hidden-state units)")
        self.sized = self.seg is not None or costs.has_sizes
        self.alpha = alpha or 1
        self.beta = self.alpha if beta is None else beta
        ib = costs.internal_bytes
        self._ib, self._bb = ib, costs.beta_bytes if costs.beta_bytes is not None else ib

    @property
    def source(self) -> str:
        return "segments" if self.seg is not None else "steps"

    def forward(self, L: int) -> float:
        return self.seg.at("forward", L) if self.seg else L * self.costs.forward_graph

    def backward(self, L: int) -> float:
        return self.seg.at("backward", L) if self.seg else L * self.costs.backward

    def run(self, L: int) -> float:
        return self.seg.run(L) if self.seg else self.costs.run(L)

    def stored_bytes(self, L: int) -> int:
        if L <= 0:
            return 0
        if self.seg:
            return math.ceil(self.seg.at("stored_bytes", L))
        return self._ib + (L - 1) * self._bb

    def beta_bytes(self, L: int) -> int:
        if L <= 0:
            return 0
        return math.ceil(self.seg.at("beta_bytes", L)) if self.seg else L * self._bb

    def stored_units(self, L: int) -> int:
        if L <= 0:
            return 0
        if self.sized:
            return max(1, math.ceil(self.stored_bytes(L) / self.hb))
        return self.alpha + (L - 1) * self.beta

    def beta_units(self, L: int) -> int:
        if L <= 0:
            return 0
        if self.sized:
            return max(1, math.ceil(self.beta_bytes(L) / self.hb))
        return L * self.beta

    def working(self, L: int) -> int | None:
        """Working set of an ``L``-step core (None when unknown)."""
        if self.seg:
            return math.ceil(self.seg.at("working_bytes", L))
        if self.costs.working_bytes is None or not self.sized:
            return None
        return self.costs.working_bytes + self.stored_bytes(L - 1)

    def core(self, L: int) -> int | None:
        """Working set of a *lone* ``L``-step core, backpropagated alone (HSM chains):
        ``segments.core_bytes`` where measured, else :meth:`working` (an upper bound)."""
        if self.seg:
            return math.ceil(self.seg.at("core_bytes", L))
        return self.working(L)


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


def price(block_ops, bounds: list[int], prices: Prices) -> tuple[float, float]:
    """(forward cost, backward cost) of a block plan with every call at its real length:
    maximal graph-free runs as one fused run (a hidden push ends a run, as in the simulator),
    each graph block one fused call, each block backward one call."""
    fwd = bwd = 0.0
    run = 0
    cursor = None

    def close():
        nonlocal run, fwd
        fwd += prices.run(run)
        run = 0

    for op in block_ops:
        j = op.step
        L = bounds[j] - bounds[j - 1]
        if isinstance(op, Forward):
            if op.keep in (None, "hidden"):
                if cursor != j - 1:
                    close()
                run += L
                if op.keep == "hidden":
                    close()
            else:
                close()
                fwd += prices.forward(L)
            cursor = j
        else:
            close()
            if isinstance(op, Backward):
                bwd += prices.backward(L)
                cursor = None
            elif cursor == j:
                cursor = None
    close()
    return fwd, bwd


# -- the block plan -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockPlan(Plan):
    """A :class:`Plan` made on blocks of ``block_size`` steps (see :mod:`.blocks`).

    ``ops`` are the expanded step-level ops and ``sim`` their step-level replay (validation;
    counts; its times and bytes are those of *stepped* execution). The fused predictions
    override: ``peak_memory`` / ``peak_bytes`` are the block-level stored peak (the core block
    free, like the paper's core), ``forward_cost`` / ``predicted_cost`` price every call at its
    real length, ``predicted_peak_bytes`` adds the ``k``-step working set. ``memory`` (and
    ``budget.units``) is what the block DP was given: the budget minus the reserve
    (``budget.note`` says which). ``info["candidates"]`` holds, for every ``k`` tried, the DP's
    own prediction under the uniform block model (``dp_model_cost``: fitted runs, every block
    at ``k`` steps) beside the re-priced ``predicted_cost``.
    """

    block_size: int = 1
    block_ops: tuple = ()
    block_sim: SimResult | None = None
    working_set_bytes: int | None = None
    fused_forward_cost: float = 0.0
    fused_backward_cost: float = 0.0

    @property
    def block(self) -> int:
        return self.block_size

    @property
    def block_bounds(self) -> tuple:
        """The last step of every block: the executor runs each stored block as one fused
        segment ending there (``membptt.bptt``), so what runs is what was priced."""
        return tuple(block_bounds(self.seq_len, self.block_size)[1:])

    @property
    def peak_memory(self):
        return self.block_sim.peak_units

    @property
    def peak_bytes(self) -> int | None:
        return self.block_sim.peak_bytes

    @property
    def forward_cost(self) -> float:
        return self.fused_forward_cost

    @property
    def predicted_cost(self) -> float:
        return self.fused_forward_cost + self.fused_backward_cost

    @property
    def predicted_peak_bytes(self) -> int | None:
        if self.peak_bytes is None or self.working_set_bytes is None:
            return None
        return self.peak_bytes + self.working_set_bytes

    def to_dict(self, with_ops: bool = False) -> dict:
        d = super().to_dict(with_ops)
        d["working_set_bytes"] = self.working_set_bytes
        return d

    def __str__(self) -> str:
        return super().__str__()[:-1] + f", blocks of {self.block_size})"


def reserve_bytes(prices: Prices, k: int, r: int) -> tuple[int, str]:
    """Bytes a byte budget sets aside beyond stored blocks (module docstring, Budgets)."""
    w = [prices.working(L) for L in (k, r)]
    if w[0] is not None:
        return max(w), f"the {k}-step working set ({max(w)} B)"
    res = max(prices.stored_bytes(k - 1), prices.stored_bytes(r - 1))
    return res, f"the core block's first {k - 1} stored steps ({res} B; no working set known)"


def reserve_units(prices: Prices, k: int, r: int) -> tuple[int, str]:
    """Units a unit budget sets aside: the core block's first ``k - 1`` steps."""
    res = max(prices.stored_units(k - 1), prices.stored_units(r - 1))
    return res, f"the core block's first {k - 1} steps ({res} units)"


def minimum_block_memory(strategy: str, block_alpha: int) -> int:
    """Smallest block-DP memory: one internal block slot for ISM, the start state otherwise."""
    return block_alpha if strategy == "ism" else 1


def _block_budget(kind: str, units, nbytes, k: int, r: int, prices: Prices, ci: bool):
    """(units for the block DP or None when nothing is left, reserve, reserve note)."""
    if nbytes is not None:
        reserve, what = reserve_bytes(prices, k, r)
        avail = nbytes - reserve
        if avail < 0:
            return None, reserve, what
        return math.floor(avail / prices.hb + 1e-9) + (1 if ci else 0), reserve, what
    reserve, what = reserve_units(prices, k, r)
    return units - reserve, reserve, what


def _solve_block(strategy: str, T: int, k: int, prices: Prices, kind, units, nbytes,
                 limit: dict):
    """Solve one ``k`` exactly; a dict describing the candidate (``ops`` set when feasible).
    ``limit``: ``dp.table``'s ``max_bytes`` / ``max_work`` (the plan's limits)."""
    strat = STRATEGIES[strategy]
    bounds = block_bounds(T, k)
    n = len(bounds) - 1
    r = T - bounds[n - 1]
    aB = max(prices.stored_units(k), prices.stored_units(r))
    bB = max(prices.beta_units(k), prices.beta_units(r))
    run_fixed, run_per_block, fit = fit_runs(prices, k, n)
    sizes = {}
    if prices.sized:
        sizes = dict(hidden_bytes=prices.hb,
                     internal_bytes=max(prices.stored_bytes(k), prices.stored_bytes(r)),
                     beta_bytes=max(prices.beta_bytes(k), prices.beta_bytes(r)))
    bcosts = CostModel(run_fixed=run_fixed, run_per_step=run_per_block,
                       forward_graph=prices.forward(k), backward=prices.backward(k), **sizes)
    m, reserve, what = _block_budget(kind, units, nbytes, k, r, prices, strat.count_initial)
    cand = {"k": k, "blocks": n, "last_block": r, "block_alpha": aB, "block_beta": bB,
            "reserve": reserve, "reserve_of": what, "block_memory": m, "run_fit": fit}
    minimum = minimum_block_memory(strategy, aB)
    if strategy == "hsm":
        family, mem = dp.hsm_family(), m
    elif strategy == "ism":
        family, mem = dp.ism_family(), None if m is None else m // aB
    else:
        family, mem = dp.msm_family(aB, bB), m
    cand["minimum_block_memory"] = minimum
    if m is None or m < minimum:
        cand["feasible"] = False
        return cand
    try:
        tab = dp.table(n, mem, family, bcosts, **limit)
    except limits.PlanTooLarge as e:  # this k is too much work or memory: the others may fit
        cand.update(feasible=False, refused=str(e))
        return cand
    block_ops = emit_from_table(tab, n, mem)
    bsim = simulate_ops(block_ops, n, alpha=aB, beta=None if strategy == "ism" else bB,
                        count_initial=strat.count_initial, costs=bcosts)
    if bsim.peak_units > m:  # a planner bug, never a user error
        raise AssertionError(f"block plan exceeds its budget: {bsim.peak_units} > {m}")
    fwd, bwd = price(block_ops, bounds, prices)
    work = max(prices.working(k), prices.working(r)) if prices.working(k) is not None else None
    cand.update(feasible=True, block_ops=tuple(block_ops), block_sim=bsim, block_costs=bcosts,
                block_dp_cost=tab.cost(n, mem), block_dp_memory=mem, forward_cost=fwd,
                backward_cost=bwd, dp_model_cost=tab.cost(n, mem) + n * bcosts.backward,
                predicted_cost=fwd + bwd, working_set_bytes=work,
                predicted_peak_bytes=None if work is None or bsim.peak_bytes is None
                else bsim.peak_bytes + work)
    return cand


def candidate_lengths(seq_len: int, costs: CostModel, block) -> list[int]:
    if block != "auto":
        return [min(block, seq_len)]  # k >= T: one block, the whole sequence
    if costs.segments is not None:
        ks = [L for L in costs.segments.lengths if L <= seq_len]
    else:
        ks = [2**e for e in range(seq_len.bit_length()) if 2**e <= seq_len]
    return ks


def plan_blocks(strategy: str, seq_len: int, memory, *, alpha, beta, costs: CostModel, block,
                percent_of: str, options: dict, max_table_bytes: int | None = None,
                max_ops: int | None = None, max_dp_work: int | None = None) -> BlockPlan:
    """``membptt.plan`` for ``block="auto"`` or an int (see the module docstring); the size
    limits are :func:`membptt.plan`'s (``None``: the defaults of :mod:`.limits`)."""
    from .peak import requested_bytes

    if options:
        raise ValueError(f"block planning takes no strategy options; got {sorted(options)}")
    strat = STRATEGIES[strategy]
    prices = Prices(costs, alpha, beta)
    if not prices.sized and alpha is None and strategy != "hsm":
        raise ValueError(f"strategy {strategy!r} needs alpha (internal-state size in "
                         "hidden-state units): pass alpha=... or costs with state sizes")
    if memory is None:
        raise ValueError(f"block planning needs a memory budget ({VALID_FORMS})")
    kind, value, nbytes, note = requested_bytes(memory, seq_len=seq_len, costs=costs,
                                                percent_of=percent_of)
    units = None
    if kind == "bytes" and not prices.sized:
        raise ValueError(f"memory budget {memory!r} is in bytes, which needs state sizes: "
                         "pass costs with hidden_bytes and internal_bytes (or segments)")
    if nbytes is None:
        if kind == "fraction":
            if alpha is None:
                raise ValueError(f"memory budget {memory!r} is a fraction of the full-cache "
                                 "memory (T internal states), which needs alpha or sizes")
            units = math.floor(value * alpha * seq_len + 1e-9)
            note = f"{value:.6g} x full-cache memory ({seq_len} x alpha={alpha} units) = {units}"
        else:
            units = int(value)
    limit = {"max_bytes": max_table_bytes, "max_work": max_dp_work}
    cands = [_solve_block(strategy, seq_len, k, prices, kind, units, nbytes, limit)
             for k in candidate_lengths(seq_len, costs, block)]
    ok = [c for c in cands if c["feasible"]]
    refused = [c for c in cands if c.get("refused")]
    if not ok and refused:
        raise limits.PlanTooLarge(
            f"no block length fits the planning limits for strategy {strategy!r}, "
            f"seq_len={seq_len}, memory {memory!r}: "
            + "; ".join(f"k={c['k']}: {c['refused']}" for c in refused))
    if not ok:
        if nbytes is not None:
            need = min(c["reserve"] + (c["minimum_block_memory"] - strat.count_initial)
                       * prices.hb for c in cands)
            have = f"{nbytes} B"
        else:
            need = min(c["reserve"] + c["minimum_block_memory"] for c in cands)
            have = f"{units} units"
        raise BudgetTooSmall(
            f"memory budget {memory!r} ({have}) is below the minimum of strategy {strategy!r} "
            f"for seq_len={seq_len} with blocks of {[c['k'] for c in cands]} steps: "
            f"{need} {'B' if nbytes is not None else 'units'}",
            requested=memory, minimum=need, strategy=strategy, seq_len=seq_len,
            unit="bytes" if nbytes is not None else "units")
    best = min(ok, key=lambda c: (c["predicted_cost"], c["predicted_peak_bytes"] or 0, c["k"]))
    k = best["k"]
    ops = expand(best["block_ops"], block_bounds(seq_len, k))
    limits.check_ops(len(ops), limits.max_ops(max_ops), strategy=strategy, seq_len=seq_len)
    sim = simulate_ops(ops, seq_len, alpha=alpha or 1, beta=beta,
                       count_initial=strat.count_initial, costs=costs)
    minus = f"minus {best['reserve_of']} " if best["reserve"] else ""
    budget = Budget(str(memory), kind, best["block_memory"], nbytes,
                    (note + "; " if note else "") + minus
                    + f"-> {best['block_memory']} units for stored blocks of {k} steps")
    keep = ("k", "feasible", "blocks", "last_block", "block_alpha", "block_beta",
            "block_memory", "block_dp_cost", "dp_model_cost", "predicted_cost",
            "predicted_peak_bytes", "refused")
    info = {"block": k, "prices": prices.source,
            "k_measured": costs.segments is None or k in costs.segments.lengths, "block_dp_cost": best["block_dp_cost"],
            "block_dp_memory": best["block_dp_memory"], "block_alpha": best["block_alpha"],
            "block_beta": best["block_beta"], "run_fit": best["run_fit"],
            "candidates": [{key: c.get(key) for key in keep} for c in cands]}
    return BlockPlan(strategy, seq_len, tuple(ops), alpha, beta, strat.count_initial, costs,
                     budget, sim, info, block_size=k, block_ops=best["block_ops"],
                     block_sim=best["block_sim"], working_set_bytes=best["working_set_bytes"],
                     fused_forward_cost=best["forward_cost"],
                     fused_backward_cost=best["backward_cost"])
