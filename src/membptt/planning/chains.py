"""Chain planning: BPTT-HSM with fused with-graph chains of any length, priced by length.

Block planning (:mod:`.blocks`) runs the paper's recurrence on blocks of one length ``k``:
checkpoints sit only at block bounds and every with-graph call has ``k`` steps. This module
plans on **steps** and lets the last action of every sub-problem be a *chain* of any length
``L``: the ``L`` steps run with graph in one fused call and are backpropagated at once. It is
BPTT-HSM's recurrence (Gruslys et al. 2016, arXiv:1606.03401) with chains priced by their
measured length; with chains of one step and unit prices it is BPTT-HSM exactly
(``tests/test_chains.py``).

A sub-problem is "backpropagate ``t`` steps from a stored state with ``m`` free slots, the start
state's own slot included" (as in :mod:`.dp`). Its first action is one of

* **hidden push at y** (``1 <= y < t``): a graph-free run of ``y`` steps, store the state,
  solve the right part with ``m - 1``, drop the state, solve the left part with ``m``::

      Q1(t, m, y) = run(y) + C(t - y, m - 1) + C(y, m)

* **chain of L** (``1 <= L <= t``, when it fits): a graph-free run of ``t - L`` steps, the
  last ``L`` steps with graph in one fused call, their backward, then the left part::

      Q2(t, m, L) = run(t - L) + forward(L) + backward(L) + C(t - L, m)

Boundaries ``C(0, m) = 0``, ``C(t >= 1, m <= 0) = inf``. Ties: least cost, then hidden push
before chain, then smallest ``y``, then longest ``L``.

**Prices** are :class:`~membptt.planning.prices.Prices` of ``costs.segments`` (measured fused
calls, interpolated between measured lengths; graph-free runs at their real length, so a run's
fixed cost is counted once per run). **Bytes**: with a budget of ``B`` bytes and hidden states
of ``hb`` bytes the top sub-problem gets ``M = floor(B / hb) + 1`` slots (``h_0``'s slot
free; :func:`membptt.planning.budget.units_for`); a sub-problem with ``m`` slots left has ``M - m`` states stored above it, so a chain of
``L`` fits when ``(M - m) hb + core(L) <= B``, with ``core(L)`` the probed working set of a
*lone* ``L``-step core (its graph, backward temporaries, parameter gradients, a graph-free run's
transient; ``SegmentCosts.core_bytes``): an HSM plan backpropagates every chain alone, never
linked to a stored one, so the larger working set of linked chains (``working_bytes``, which
ISM/MSM block plans need) is not charged. Costs probed before ``core_bytes`` existed fall back
to ``working_bytes``. Chains are at most the longest measured length. So every chain's predicted peak,
stored states included, is within the budget (``Plan.predicted_peak_bytes``, from the one
replay :func:`membptt.planning.replay.predict` with the chain ends as segment ends, is the
largest).

**Work**: ``O(T^2 M)`` candidate evaluations for the hidden pushes plus ``O(T M Lmax)`` for
the chains (every action of ``C(t, .)`` reads rows below ``t``, so row ``t`` is computed for
all ``m`` at once), fewer with saturation (:func:`saturation`: columns past
``m_all + t - 1`` are copied, which bounds the work by about ``T^3 / 3`` when the budget has
room beyond the longest chain). The loop is compiled (``_dpcore.c``) with a numpy version that gives equal tables. The evaluations
(:func:`dp_work`, :func:`elements_per_unit` to a unit) and the table's ``(T + 1)(M + 1)`` cells
are checked against the planning limits (:mod:`.limits`) before anything is allocated. Planning times are in ``docs/planning.md``.

Kept chains (MSM's internal states as chains) are not planned here: on the measured prices of
``benchmarks/bench_floor.py`` they did not lower the optimum at 5 % or below the checkpoint
front (``docs/executor-speed.md``).
"""

from __future__ import annotations

import math

import numpy as np

from . import dp, limits
from .budget import Budget, too_small, units_for
from .errors import PlanTooLarge
from .ops import Backward, Drop, Forward, Op
from .plan import Plan
from .prices import Prices
from .problem import MinimumBudget, Problem
from .replay import predict, simulate_ops

__all__ = ["ELEMENTS_PER_UNIT", "dp_work", "elements_per_unit", "fitting_chains", "minimum",
           "plan", "saturation", "solve"]


def solve(T: int, M: int, run, chain, ok, *, saturate: bool = True, use: str | None = None,
          m_all: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tables ``C``, ``kind`` (0 hidden push, 1 chain, -1 none) and ``arg`` (``y`` or ``L``).

    ``run``: ``T + 1`` costs of graph-free runs by length (``run[0] = 0``); ``chain``: costs of a
    chain of ``L`` steps at index ``L`` (``chain[0]`` unused, ``inf`` where impossible);
    ``ok``: boolean ``(len(chain), M + 1)``, whether a chain of ``L`` fits with ``m`` slots
    (monotone: more slots left means fewer states stored above). With ``saturate`` (the
    default) row ``t`` is computed only up to ``m = m_all + t - 1`` and copied beyond, which is
    exact (:func:`saturation`); ``saturate=False`` computes every cell (the tests compare).
    ``use``: ``"c"`` (the compiled loop of ``_dpcore.c``, the default when built) or
    ``"numpy"``; both do the same sums in the same order, so their tables are equal.
    ``m_all``: :func:`saturation` of ``ok``, when the caller has it.
    """
    run = np.asarray(run, dtype=float)
    chain = np.asarray(chain, dtype=float)
    ok = np.asarray(ok, dtype=bool)
    lmax = len(chain) - 1
    if run.shape != (T + 1,) or run[0] != 0:
        raise ValueError(f"run must have T + 1 = {T + 1} entries with run[0] = 0")
    if ok.shape != (lmax + 1, M + 1):
        raise ValueError(f"ok must have shape {(lmax + 1, M + 1)}, got {ok.shape}")
    if np.isnan(run).any() or (run < 0).any() or np.isnan(chain).any() or (chain < 0).any():
        raise ValueError("run and chain must hold costs >= 0 (inf where impossible), got "
                         f"run={run!r}, chain={chain!r}")
    C = np.full((T + 1, M + 1), np.inf)
    C[0, :] = 0.0
    kind = np.full((T + 1, M + 1), -1, dtype=np.int8)
    arg = np.zeros((T + 1, M + 1), dtype=np.int32)
    if M < 1:
        return C, kind, arg
    # every action of C(t, .) reads rows < t only, so row t is computed for all m at once
    okc = fitting_chains(ok, chain)
    m_all = saturation(okc) if m_all is None else m_all
    use = use or ("c" if dp.CHAIN_CORE is not None else "numpy")
    if use == "c":
        if dp.CHAIN_CORE is None:
            raise RuntimeError("the compiled DP core is not built (reinstall membptt with a C "
                               "compiler)")
        dp.CHAIN_CORE(T, M, lmax, m_all, int(bool(saturate)), np.ascontiguousarray(run),
                   np.ascontiguousarray(chain), np.ascontiguousarray(okc, dtype=np.int8),
                   C, kind, arg, np.empty(M), np.empty(M, dtype=np.int32))
        return C, kind, arg
    if use != "numpy":
        raise ValueError(f"use must be 'c' or 'numpy', got {use!r}")
    for t in range(1, T + 1):
        # columns past m_all + t - 1 equal that column (saturation's docstring): not computed
        Mt = min(M, m_all + t - 1) if saturate else M
        best = np.full(Mt, np.inf)
        bk = np.full(Mt, -1, dtype=np.int8)
        ba = np.zeros(Mt, dtype=np.int32)
        if t >= 2:
            # y = 1 .. t-1 down the rows: run(y) + C(t - y, m - 1) + C(y, m), as views
            q = run[1:t, None] + C[t - 1:0:-1, :Mt]
            q += C[1:t, 1:Mt + 1]
            j = np.argmin(q, axis=0)  # the first minimum: the smallest y
            best = q[j, np.arange(Mt)]
            bk[np.isfinite(best)] = 0
            ba[:] = j + 1
        lt = min(lmax, t)
        if lt >= 1:
            ls = np.arange(lt, 0, -1)  # longest first, so argmin's first minimum is the longest
            q2 = run[t - ls][:, None] + chain[ls][:, None] + C[t - ls, 1:Mt + 1]
            q2 = np.where(okc[ls, :Mt], q2, np.inf)
            j2 = np.argmin(q2, axis=0)
            b2 = q2[j2, np.arange(Mt)]
            better = b2 < best
            best = np.where(better, b2, best)
            bk[better] = 1
            ba[better] = ls[j2[better]]
        C[t, 1:Mt + 1], kind[t, 1:Mt + 1], arg[t, 1:Mt + 1] = best, bk, ba
        if Mt < M:
            C[t, Mt + 1:], kind[t, Mt + 1:], arg[t, Mt + 1:] = best[-1], bk[-1], ba[-1]
    return C, kind, arg


def fitting_chains(ok: np.ndarray, chain: np.ndarray) -> np.ndarray:
    """``(lmax + 1, M)`` booleans for ``m = 1..M``: the chain of ``L`` fits and can run (finite
    price); row 0 (no chain) is False."""
    okc = ok[:, 1:] & np.isfinite(chain)[:, None]
    okc[0] = False
    return okc


def saturation(okc: np.ndarray) -> int:
    """The least ``m_all >= 1`` from which the columns of ``okc`` (``ok[:, 1:]``: which chains
    fit with ``m = 1..M`` slots) no longer change.

    A sub-problem of ``t`` steps nests at most ``t - 1`` hidden pushes, each taking one slot,
    so with ``m >= m_all + t - 1`` slots every sub-problem it reaches has at least ``m_all``:
    every chain fits wherever the plan could use one, and the plans open to it (hence
    ``C(t, m)``, its action and argument) are those of ``m = m_all + t - 1``. Large budgets
    thus cost ``O(T^3)`` work instead of ``O(T^2 M)``.
    """
    changed = (okc != okc[:, -1:]).any(axis=0)  # columns (m = 1..M) unlike the last one
    idx = np.flatnonzero(changed)
    return int(idx[-1]) + 2 if idx.size else 1


ELEMENTS_PER_UNIT = 4
"""Candidate evaluations of the compiled chain loop per unit of ``max_dp_work``, chosen so that
a unit of work takes about the same time in the chain loop and in the step-level DP core (the
chain loop's evaluation is a few times cheaper than the step core's unit of work; measured by
``benchmarks/bench_planner.py``). The numpy loop (no compiled core) counts one per unit."""


def elements_per_unit() -> int:
    """:data:`ELEMENTS_PER_UNIT` with the compiled loop, 1 with the numpy one."""
    return ELEMENTS_PER_UNIT if dp.CHAIN_CORE is not None else 1


def dp_work(T: int, M: int, lmax: int, m_all: int) -> int:
    """Candidate evaluations of :func:`solve` with saturation (hidden pushes and chains),
    ``sum over t of min(M, m_all + t - 1) * (t - 1 + min(lmax, t))``; divided by
    :func:`elements_per_unit` it is checked against ``max_dp_work``."""
    t = np.arange(1, T + 1, dtype=np.int64)
    return int((np.minimum(M, m_all + t - 1) * (t - 1 + np.minimum(lmax, t))).sum())


def emit(T: int, M: int, kind: np.ndarray, arg: np.ndarray, max_ops: int
         ) -> tuple[list[Op], list[tuple[int, int]]]:
    """Step-level ops of the optimal plan and its chains ``(first step, last step)``."""
    ops: list[Op] = []
    chains: list[tuple[int, int]] = []
    stack: list = [("solve", 0, T, M)]
    while stack:
        item = stack.pop()
        if item[0] == "op":
            ops.append(item[1])
            continue
        _, s, t, m = item
        if t == 0:
            continue
        k, a = int(kind[t, m]), int(arg[t, m])
        if k == 0:  # hidden push at y = a
            ops += [Forward(i) for i in range(s + 1, s + a)] + [Forward(s + a, "hidden")]
            stack += [("solve", s, a, m), ("op", Drop(s + a, "hidden")),
                      ("solve", s + a, t - a, m - 1)]
        elif k == 1:  # a chain of L = a steps ends the sub-problem
            first, last = s + t - a + 1, s + t
            ops += [Forward(i) for i in range(s + 1, first)]
            ops += [Forward(i, "internal") for i in range(first, last)] + [Forward(last, "core")]
            ops += [Backward(i) for i in range(last, first - 1, -1)]
            ops += [Drop(i, "internal") for i in range(last - 1, first - 1, -1)]
            chains.append((first, last))
            stack.append(("solve", s, t - a, m))
        else:  # pragma: no cover - the top cell is finite, so every reached cell is
            raise AssertionError(f"chain plan: no action at t={t}, m={m}")
        if len(ops) > max_ops:
            limits.check_ops(len(ops), max_ops, strategy="hsm", seq_len=T)
    return ops, chains


def _prices(pb: Problem) -> Prices:
    if pb.costs.segments is None:
        raise ValueError("the chain planner prices fused calls by length: it needs costs with "
                         "segments (costs=membptt.probe(step, state0, inputs))")
    return Prices(pb.costs, pb.alpha, pb.beta)


def _cores(pb: Problem, prices: Prices) -> dict[int, int]:
    """The working set of a lone chain of ``L`` steps, for every ``L`` a chain may have."""
    return {L: prices.core(L) for L in range(1, min(pb.seq_len, pb.costs.segments.lengths[-1]) + 1)}


def minimum(pb: Problem) -> MinimumBudget:
    """The least byte budget: a chain fits with nothing stored (:func:`plan` refuses below)."""
    nbytes = min(_cores(pb, _prices(pb)).values())
    return MinimumBudget(pb.name, pb.seq_len, None, nbytes, None, "chains")


def plan(pb: Problem) -> Plan:
    """BPTT-HSM with fused chains (module docstring). Needs ``costs.segments`` and a byte or
    percentage budget."""
    if pb.options:
        raise ValueError(f"chain planning takes no strategy options; got {sorted(pb.options)}")
    prices = _prices(pb)
    req = pb.req
    if req is None or req.nbytes is None:
        raise ValueError("the chain planner needs a budget in bytes or a percentage (e.g. "
                         f"'64MiB' or '5%'), got {None if req is None else req.text!r} "
                         "(hidden-state units do not price fused chains)")
    nbytes = req.nbytes
    hb, T = prices.hb, pb.seq_len
    work = _cores(pb, prices)
    fitting = [L for L, w in work.items() if w <= nbytes]
    if not fitting:
        raise too_small(req, strategy=pb.name, seq_len=T, planner="chains",
                        minimum_bytes=min(work.values()), what=", the least working set of a chain")
    lmax = max(fitting)
    M = units_for(nbytes, hb, True)
    limits.check_table(T, M, pb.max_table_bytes, "the chain DP's tables")
    run = np.array([prices.run(y) for y in range(T + 1)])
    chain = np.full(lmax + 1, np.inf)
    ok = np.zeros((lmax + 1, M + 1), dtype=bool)
    m = np.arange(M + 1)
    for L in fitting:
        chain[L] = prices.forward(L) + prices.backward(L)
        ok[L] = (m >= 1) & ((M - m) * hb + work[L] <= nbytes)
    m_all = saturation(fitting_chains(ok, chain))
    evals = dp_work(T, M, lmax, m_all)
    per = elements_per_unit()
    need_work = -(-evals // per)
    if need_work > pb.max_dp_work:
        raise PlanTooLarge(
            f"the chain DP for seq_len={T} with {M} slots and chains up to {lmax} steps needs "
            f"{need_work:.3g} units of work ({evals:.3g} candidate evaluations, "
            f"{per} per unit), above the limit {pb.max_dp_work:.3g} (max_dp_work): "
            "use planner='blocks', a smaller budget or a shorter sequence, or raise "
            "max_dp_work", limit="work")
    C, kinds, args = solve(T, M, run, chain, ok, m_all=m_all)
    if not math.isfinite(C[T, M]):  # pragma: no cover - a one-step chain always fits at M
        raise AssertionError("chain plan: no finite plan although a chain fits")
    ops, chains = emit(T, M, kinds, args, pb.max_ops)
    limits.check_ops(len(ops), pb.max_ops, strategy=pb.name, seq_len=T)
    sim = simulate_ops(ops, T, alpha=pb.alpha or 1, beta=pb.beta, count_initial=True,
                       costs=pb.costs)
    ends = tuple(sorted({b for _, b in chains}))
    pred = predict(ops, T, pb.costs, alpha=pb.alpha, beta=pb.beta, segment_ends=ends)
    if pred.peak_bytes > nbytes:  # a planner bug, never a user error
        raise AssertionError(f"chain plan exceeds its budget: {pred.peak_bytes} > {nbytes}")
    # the DP's table prices graph-free runs at the call cap every plan admits; the plan's own
    # prediction at the longer calls its least working set admits (no more than that)
    dp_pred = pred if not prices.chunked else predict(
        ops, T, pb.costs, alpha=pb.alpha, beta=pb.beta, segment_ends=ends, own_cap=False)
    if not math.isclose(dp_pred.total_cost, C[T, M], rel_tol=1e-9):  # pragma: no cover
        raise AssertionError(f"chain plan replays at {dp_pred.total_cost}, the DP said "
                             f"{C[T, M]}")
    budget = Budget(req.text, req.kind, M, nbytes,
                    (req.note + "; " if req.note else "") + f"{M} hidden-state slots of {hb} B "
                    "(h_0's free); a chain of L steps fits when the states stored above it "
                    "plus its working set fit")
    lens = [b - a + 1 for a, b in chains]
    info = {"prices": prices.source, "chains": len(chains),
            "chain_min": min(lens), "chain_max": max(lens),
            "chain_mean": sum(lens) / len(lens), "longest_fitting_chain": lmax,
            "dp_cost": float(C[T, M]), "dp_slots": M}
    hidden_peak = max(0, (pred.stored_peak_bytes or 0) // hb)
    return Plan(pb.name, T, tuple(ops), pb.alpha, pb.beta, True, pb.costs, budget, sim, info,
                planner="chains", segment_ends=ends, prediction=pred, units=hidden_peak,
                chains=tuple(chains))
