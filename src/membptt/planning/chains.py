"""Chain planning: BPTT-HSM with fused with-graph chains of any length, priced by length.

Block planning (:mod:`.blocks`) runs the paper's recurrence on blocks of one length ``k``:
checkpoints sit only at block bounds and every with-graph call has ``k`` steps. This module
plans on **steps** and lets the last action of every sub-problem be a *chain* of any length
``L``: the ``L`` steps run with graph in one fused call and are backpropagated at once. It is
BPTT-HSM's recurrence with chains priced by their measured length (the option issue 9 names
first); with chains of one step and unit prices it is BPTT-HSM exactly
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

**Prices** are :class:`~membptt.planning.blocks.Prices` of ``costs.segments`` (measured fused
calls, interpolated between measured lengths; graph-free runs at their real length, so a run's
fixed cost is counted once per run). **Bytes**: with a budget of ``B`` bytes and hidden states
of ``hb`` bytes the top sub-problem gets ``M = floor(B / hb) + 1`` slots (``h_0``'s slot
free); a sub-problem with ``m`` slots left has ``M - m`` states stored above it, so a chain of
``L`` fits when ``(M - m) hb + working(L) <= B``, with ``working(L)`` the probed working set of
an ``L``-step core (its graph, backward temporaries, parameter gradients, a graph-free run's
transient). Chains are at most the longest measured length. So every chain's predicted peak,
stored states included, is within the budget (``Plan.predicted_peak_bytes`` is the largest).

**Work**: ``O(T^2 M)`` for the hidden pushes plus ``O(T M Lmax)`` for the chains, as numpy
arrays over ``(y, m)`` for each ``t`` (every action of ``C(t, .)`` reads rows below ``t``); the
table has ``(T + 1)(M + 1)`` cells. Both are checked against the planning limits
(:mod:`.limits`) before anything is allocated. At ``T = 1000`` and 5 % of stepped BPTT's bytes
(about 230 slots) planning takes seconds; large budgets are refused by the work limit (use
``block="auto"`` there: with that much memory, blocks are within a few per cent of the front).

Kept chains (MSM's internal states as chains) are not planned here: on the measured prices of
``benchmarks/bench_floor.py`` they did not lower the optimum at 5 % or below the
checkpoint front (``benchmarks/chain_dp.py`` solves that larger class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import limits
from .budget import Budget
from .costs import CostModel
from .ops import Backward, Drop, Forward, Op
from .plan import Plan
from .simulate import BudgetTooSmall, simulate_ops

__all__ = ["ChainPlan", "plan_chains", "solve"]

CHAIN_STRATEGIES = ("hsm",)


def solve(T: int, M: int, run, chain, ok) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tables ``C``, ``kind`` (0 hidden push, 1 chain, -1 none) and ``arg`` (``y`` or ``L``).

    ``run``: ``T + 1`` costs of graph-free runs by length (``run[0] = 0``); ``chain``: costs of a
    chain of ``L`` steps at index ``L`` (``chain[0]`` unused, ``inf`` where impossible);
    ``ok``: boolean ``(len(chain), M + 1)``, whether a chain of ``L`` fits with ``m`` slots.
    """
    run = np.asarray(run, dtype=float)
    chain = np.asarray(chain, dtype=float)
    ok = np.asarray(ok, dtype=bool)
    lmax = len(chain) - 1
    if run.shape != (T + 1,) or run[0] != 0:
        raise ValueError(f"run must have T + 1 = {T + 1} entries with run[0] = 0")
    if ok.shape != (lmax + 1, M + 1):
        raise ValueError(f"ok must have shape {(lmax + 1, M + 1)}, got {ok.shape}")
    C = np.full((T + 1, M + 1), np.inf)
    C[0, :] = 0.0
    kind = np.full((T + 1, M + 1), -1, dtype=np.int8)
    arg = np.zeros((T + 1, M + 1), dtype=np.int32)
    if M < 1:
        return C, kind, arg
    # every action of C(t, .) reads rows < t only, so row t is computed for all m at once
    okc = ok[:, 1:] & np.isfinite(chain)[:, None]  # (lmax + 1, M), m = 1..M
    okc[0] = False
    for t in range(1, T + 1):
        best = np.full(M, np.inf)
        bk = np.full(M, -1, dtype=np.int8)
        ba = np.zeros(M, dtype=np.int32)
        if t >= 2:
            # y = 1 .. t-1 down the rows: run(y) + C(t - y, m - 1) + C(y, m), as views
            q = run[1:t, None] + C[t - 1:0:-1, :M]
            q += C[1:t, 1:]
            j = np.argmin(q, axis=0)  # the first minimum: the smallest y
            best = q[j, np.arange(M)]
            bk[np.isfinite(best)] = 0
            ba[:] = j + 1
        lt = min(lmax, t)
        if lt >= 1:
            ls = np.arange(lt, 0, -1)  # longest first, so argmin's first minimum is the longest
            q2 = run[t - ls][:, None] + chain[ls][:, None] + C[t - ls, 1:]
            q2 = np.where(okc[ls], q2, np.inf)
            j2 = np.argmin(q2, axis=0)
            b2 = q2[j2, np.arange(M)]
            better = b2 < best
            best = np.where(better, b2, best)
            bk[better] = 1
            ba[better] = ls[j2[better]]
        C[t, 1:], kind[t, 1:], arg[t, 1:] = best, bk, ba
    return C, kind, arg


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


@dataclass(frozen=True)
class ChainPlan(Plan):
    """A :class:`Plan` of BPTT-HSM with fused chains (:mod:`.chains`).

    ``ops`` are step-level ops (validated by the simulator, ``sim``; its times and bytes are
    those of stepped execution). ``chains`` are the ``(first, last)`` steps of every with-graph
    chain, each run as one fused call (``block_bounds``, which the executor reads, ends a fused
    segment at every chain's last step). The fused predictions override: ``predicted_cost`` /
    ``forward_cost`` price every call at its real length, ``peak_bytes`` is the stored peak
    (hidden states), ``predicted_peak_bytes`` the largest of stored states plus the working set
    of the chain running at that moment.
    """

    chains: tuple = ()
    stored_peak_bytes: int = 0
    predicted_total_peak_bytes: int = 0
    fused_forward_cost: float = 0.0
    fused_backward_cost: float = 0.0
    hidden_peak: int = 0

    @property
    def block(self) -> str:
        return "chains"

    @property
    def block_bounds(self) -> tuple:
        return tuple(sorted({b for _, b in self.chains}))

    @property
    def peak_memory(self):
        return self.hidden_peak

    @property
    def peak_bytes(self) -> int | None:
        return self.stored_peak_bytes

    @property
    def forward_cost(self) -> float:
        return self.fused_forward_cost

    @property
    def predicted_cost(self) -> float:
        return self.fused_forward_cost + self.fused_backward_cost

    @property
    def predicted_peak_bytes(self) -> int | None:
        return self.predicted_total_peak_bytes

    def __str__(self) -> str:
        return (super().__str__()[:-1] + f", {len(self.chains)} chains of "
                f"{min(b - a + 1 for a, b in self.chains)}-"
                f"{max(b - a + 1 for a, b in self.chains)} steps)")


def _replay(ops, chains, prices, hb: int) -> tuple[float, float, int, int, int]:
    """(forward cost, backward cost, stored peak bytes, predicted peak bytes, hidden peak) of
    the ops with every call at its real length."""
    ends = {b: b - a + 1 for a, b in chains}
    fwd = bwd = 0.0
    run = hidden = peak_h = peak = 0
    for op in ops:
        if isinstance(op, Forward):
            if op.keep is None:
                run += 1
            elif op.keep == "hidden":
                fwd += prices.run(run + 1)
                run = 0
                hidden += 1
                peak_h = max(peak_h, hidden)
            elif op.keep == "core":
                L = ends[op.step]
                fwd += prices.run(run) + prices.forward(L)
                bwd += prices.backward(L)
                run = 0
                peak = max(peak, hidden * hb + prices.working(L))
        elif isinstance(op, Drop) and op.kind == "hidden":
            hidden -= 1
    return fwd, bwd, peak_h * hb, peak, peak_h


def plan_chains(strategy: str, seq_len: int, memory, *, alpha, beta, costs: CostModel,
                percent_of: str, options: dict, max_table_bytes: int | None = None,
                max_ops: int | None = None, max_dp_work: int | None = None) -> ChainPlan:
    """``membptt.plan(strategy, seq_len, memory, costs=..., block="chains")`` (module
    docstring). Needs ``costs.segments`` (``membptt.probe``) and a byte or percentage budget."""
    from .blocks import Prices
    from .peak import requested_bytes

    if strategy not in CHAIN_STRATEGIES:
        raise ValueError(f"block='chains' plans BPTT-HSM with fused chains; strategy must be "
                         f"one of {', '.join(CHAIN_STRATEGIES)}, got {strategy!r} (use "
                         "block='auto' for ism and msm)")
    if options:
        raise ValueError(f"chain planning takes no strategy options; got {sorted(options)}")
    if costs.segments is None:
        raise ValueError("block='chains' prices fused calls by length: it needs costs with "
                         "segments (costs=membptt.probe(step, state0, inputs))")
    if memory is None:
        raise ValueError("block='chains' needs a memory budget in bytes or a percentage "
                         "(e.g. '64MiB' or '5%')")
    kind, _, nbytes, note = requested_bytes(memory, seq_len=seq_len, costs=costs,
                                            percent_of=percent_of)
    if nbytes is None:
        raise ValueError(f"block='chains' needs a budget in bytes or a percentage, got "
                         f"{memory!r} (hidden-state units do not price fused chains)")
    prices = Prices(costs, alpha, beta)
    hb, T = prices.hb, seq_len
    seg = costs.segments
    work = {L: prices.working(L) for L in range(1, min(T, seg.lengths[-1]) + 1)}
    fitting = [L for L, w in work.items() if w <= nbytes]
    if not fitting:
        need = min(work.values())
        raise BudgetTooSmall(
            f"memory budget {memory!r} ({nbytes} B) is below the minimum of strategy "
            f"{strategy!r} with fused chains for seq_len={T}: {need} B (the least working set "
            "of a chain)", requested=memory, minimum=need, strategy=strategy,
            seq_len=T, unit="bytes")
    lmax = max(fitting)
    M = nbytes // hb + 1
    limits.check_table(T, M, limits.max_table_bytes(max_table_bytes), "the chain DP's tables")
    need_work = (T + 1) * M * (T // 2 + lmax)
    limit = limits.max_dp_work(max_dp_work)
    if need_work > limit:
        raise limits.PlanTooLarge(
            f"the chain DP for seq_len={T} with {M} slots and chains up to {lmax} steps needs "
            f"about {need_work:.3g} units of work, above the limit {limit:.3g} (max_dp_work): "
            "use block='auto' (blocks) for budgets this large, a smaller budget, or raise "
            "max_dp_work")
    run = np.array([prices.run(y) for y in range(T + 1)])
    chain = np.full(lmax + 1, np.inf)
    ok = np.zeros((lmax + 1, M + 1), dtype=bool)
    m = np.arange(M + 1)
    for L in fitting:
        chain[L] = prices.forward(L) + prices.backward(L)
        ok[L] = (m >= 1) & ((M - m) * hb + work[L] <= nbytes)
    C, kinds, args = solve(T, M, run, chain, ok)
    if not math.isfinite(C[T, M]):  # pragma: no cover - a one-step chain always fits at M
        raise AssertionError("chain plan: no finite plan although a chain fits")
    ops, chains = emit(T, M, kinds, args, limits.max_ops(max_ops))
    limits.check_ops(len(ops), limits.max_ops(max_ops), strategy=strategy, seq_len=T)
    sim = simulate_ops(ops, T, alpha=alpha or 1, beta=beta, count_initial=True, costs=costs)
    fwd, bwd, stored, peak, hidden_peak = _replay(ops, chains, prices, hb)
    if peak > nbytes:  # a planner bug, never a user error
        raise AssertionError(f"chain plan exceeds its budget: {peak} > {nbytes}")
    if not math.isclose(fwd + bwd, C[T, M], rel_tol=1e-9):  # pragma: no cover
        raise AssertionError(f"chain plan replays at {fwd + bwd}, the DP said {C[T, M]}")
    budget = Budget(str(memory), kind, M, nbytes,
                    (note + "; " if note else "") + f"{M} hidden-state slots of {hb} B "
                    "(h_0's free); a chain of L steps fits when the states stored above it "
                    "plus its working set fit")
    lens = [b - a + 1 for a, b in chains]
    info = {"block": "chains", "prices": prices.source, "chains": len(chains),
            "chain_min": min(lens), "chain_max": max(lens),
            "chain_mean": sum(lens) / len(lens), "longest_fitting_chain": lmax,
            "dp_cost": float(C[T, M]), "dp_slots": M}
    return ChainPlan(strategy, T, tuple(ops), alpha, beta, True, costs, budget, sim, info,
                     chains=tuple(chains), stored_peak_bytes=stored,
                     predicted_total_peak_bytes=peak, fused_forward_cost=fwd,
                     fused_backward_cost=bwd, hidden_peak=hidden_peak)
