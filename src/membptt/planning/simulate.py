"""Replay a plan without torch: validate it, count operations, peak memory and predicted time.

Memory accounting (PAPER.md section 1), at every point of the replay:

* *units* (the planners' currency): ``h_0`` counts 1 when the plan's accounting counts it (HSM,
  MSM and baselines; not ISM), each stored hidden state 1, each stored internal state ``beta``
  if its input state ``h_{i-1}`` is held at that moment (stored hidden state ``i-1``, stored
  internal state ``i-1``, or ``h_0``) and ``alpha`` otherwise; the working core and the cursor
  are not counted;
* *bytes* (physical, when sizes are known): the same, with ``h_0`` never counted (it is the
  caller's tensor), ``hidden_bytes`` per hidden state and ``beta_bytes`` / ``internal_bytes``
  per internal state.

Time: each maximal run of consecutive graph-free forwards (``keep`` None or "hidden"; a hidden
push ends a run) costs ``run_fixed + k * run_per_step``, each graph forward ``forward_graph``,
each backward ``backward``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .costs import UNIT_COSTS, CostModel
from .ops import Backward, Drop, Forward


class PlanError(ValueError):
    """An invalid plan; the message names the operation index and what was missing."""


class BudgetTooSmall(PlanError):
    """A memory budget below the smallest one the strategy can run in (a ``ValueError``).

    Attributes: ``requested`` (the budget as given), ``minimum`` (the smallest feasible
    budget in ``unit``: ``"units"`` (hidden-state units) or ``"bytes"``, as the message
    states), ``minimum_bytes`` (the smallest byte budget when state sizes are known, else
    None), ``strategy`` and ``seq_len``. :func:`membptt.min_memory` computes the same minimum
    without trying a plan.
    """

    def __init__(self, message: str, *, requested, minimum, strategy: str, seq_len: int,
                 unit: str = "units", minimum_bytes: int | None = None):
        super().__init__(message)
        self.requested, self.minimum, self.unit = requested, minimum, unit
        self.minimum_bytes = minimum if unit == "bytes" else minimum_bytes
        self.strategy, self.seq_len = strategy, seq_len


@dataclass(frozen=True)
class SimResult:
    seq_len: int
    forward_ops: int
    backward_ops: int
    graph_forwards: int
    runs: int  # number of graph-free runs
    peak_units: float
    peak_op: int  # index of the first op at which peak_units is reached
    peak_bytes: int | None
    forward_cost: float
    predicted_cost: float

    def to_dict(self) -> dict:
        return asdict(self)


def simulate_ops(ops, seq_len: int, *, alpha: float = 1, beta: float | None = None,
                 count_initial: bool = True, costs: CostModel = UNIT_COSTS,
                 require_drops: bool = True) -> SimResult:
    """Validate and replay ``ops`` for a chain of ``seq_len`` steps (see module docstring).

    ``require_drops=False`` accepts a plan that leaves states stored at its end (the executor
    frees an internal state at its backward and everything at the end, so hand-written traces
    such as ``F1+I F2(c) B2 B1`` need no ``Drop``); the memory counts then keep those states
    until the end, an upper bound.
    """
    T = int(seq_len)
    if T < 1:
        raise PlanError(f"seq_len must be >= 1, got {seq_len!r}")
    beta_u = alpha if beta is None else beta
    hb, ib = costs.hidden_bytes, costs.internal_bytes
    bb = costs.beta_bytes if costs.beta_bytes is not None else ib
    sized = hb is not None and ib is not None

    hidden: set[int] = set()
    internal: dict[int, bool] = {}  # step -> charged at the beta rate
    units = 1.0 if count_initial else 0.0
    nbytes = 0
    peak_units, peak_op, peak_bytes = units, -1, 0
    cursor = None  # index of the hidden state the last forward produced
    core = None
    next_b = T
    n_f = n_b = n_g = n_runs = 0
    fcost = 0.0
    run_len = 0

    def held(j: int) -> bool:
        return j == 0 or j in hidden or j in internal

    def recharge(j: int, k: int) -> None:
        # the state j was pushed or dropped: internal state j+1 may change rate
        nonlocal units, nbytes
        i = j + 1
        if i in internal:
            now_beta = held(j)
            if now_beta != internal[i]:
                du = (beta_u - alpha) if now_beta else (alpha - beta_u)
                units += du
                if sized:
                    nbytes += (bb - ib) if now_beta else (ib - bb)
                internal[i] = now_beta

    def close_run():
        nonlocal run_len, fcost, n_runs
        if run_len:
            fcost += costs.run(run_len)
            n_runs += 1
            run_len = 0

    for k, op in enumerate(ops):
        if core is not None and not (isinstance(op, Backward) and op.step == core):
            raise PlanError(f"op #{k} {op}: the working core holds step {core}, which must be "
                            f"backpropagated by the next op (B{core})")
        if isinstance(op, Forward):
            i = op.step
            if not isinstance(i, int) or not 1 <= i <= T:
                raise PlanError(f"op #{k} {op}: step must be in 1..{T}")
            if i > next_b:
                raise PlanError(f"op #{k} {op}: step {i} was already backpropagated "
                                f"(next backward is step {next_b})")
            if not (cursor == i - 1 or held(i - 1)):
                raise PlanError(f"op #{k} {op}: needs h_{i - 1}, which is neither the cursor "
                                f"(h_{cursor}) nor stored")
            n_f += 1
            if op.keep in (None, "hidden"):
                if cursor != i - 1:
                    close_run()  # a run restarts from a stored state
                run_len += 1
                if op.keep == "hidden":
                    close_run()
                    if i in hidden:
                        raise PlanError(f"op #{k} {op}: hidden state {i} is already stored")
                    hidden.add(i)
                    units += 1
                    nbytes += hb or 0
                    recharge(i, k)
            elif op.keep in ("internal", "core"):
                close_run()
                n_g += 1
                fcost += costs.forward_graph
                if op.keep == "core":
                    core = i
                else:
                    if i in internal:
                        raise PlanError(f"op #{k} {op}: internal state {i} is already stored")
                    b = held(i - 1)
                    internal[i] = b
                    units += beta_u if b else alpha
                    if sized:
                        nbytes += bb if b else ib
                    recharge(i, k)
            else:
                raise PlanError(f"op #{k} {op}: unknown keep {op.keep!r}")
            cursor = i
        elif isinstance(op, Backward):
            close_run()
            i = op.step
            if i != next_b:
                raise PlanError(f"op #{k} {op}: backward steps must run {T}..1 once each; "
                                f"expected B{next_b}")
            if core != i and i not in internal:
                raise PlanError(f"op #{k} {op}: needs the internal state of step {i}, which is "
                                "neither in the working core nor stored")
            core = None
            cursor = None
            next_b -= 1
            n_b += 1
        elif isinstance(op, Drop):
            close_run()
            i = op.step
            if op.kind == "hidden":
                if i not in hidden:
                    raise PlanError(f"op #{k} {op}: hidden state {i} is not stored")
                hidden.discard(i)
                units -= 1
                nbytes -= hb or 0
            elif op.kind == "internal":
                if i not in internal:
                    raise PlanError(f"op #{k} {op}: internal state {i} is not stored")
                b = internal.pop(i)
                units -= beta_u if b else alpha
                if sized:
                    nbytes -= bb if b else ib
            else:
                raise PlanError(f"op #{k} {op}: unknown kind {op.kind!r}")
            if cursor == i:
                cursor = None
            recharge(i, k)
        else:
            raise PlanError(f"op #{k} {op!r}: not a plan operation")
        if units > peak_units:
            peak_units, peak_op = units, k
        peak_bytes = max(peak_bytes, nbytes)
    close_run()
    if core is not None:
        raise PlanError(f"plan ends with step {core} in the working core, never backpropagated")
    if next_b != 0:
        raise PlanError(f"plan ends before backpropagating steps {next_b}..1")
    if require_drops and (hidden or internal):
        left = sorted([f"h{i}" for i in hidden] + [f"I{i}" for i in internal])
        raise PlanError(f"plan ends with states still stored: {' '.join(left)}")
    pu = int(peak_units) if float(peak_units).is_integer() else peak_units
    return SimResult(T, n_f, n_b, n_g, n_runs, pu, peak_op,
                     int(peak_bytes) if sized else None, fcost, fcost + n_b * costs.backward)


def simulate(plan, costs: CostModel | None = None) -> SimResult:
    """Replay a :class:`~membptt.planning.plan.Plan` (optionally under other costs / sizes)."""
    from .plan import Plan

    if not isinstance(plan, Plan):
        raise ValueError(f"simulate() needs a membptt.Plan (from membptt.plan(...)), got "
                         f"{type(plan).__name__}; to replay a list of ops use "
                         "membptt.planning.simulate_ops(ops, seq_len, ...)")
    if costs is not None and not isinstance(costs, CostModel):
        raise ValueError(f"costs must be a membptt.CostModel or None, got "
                         f"{type(costs).__name__}")
    return simulate_ops(plan.ops, plan.seq_len, alpha=plan.alpha or 1, beta=plan.beta,
                        count_initial=plan.count_initial, costs=costs or plan.costs)
