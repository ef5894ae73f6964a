"""Replay a plan without torch: validate it, count its operations, and price it.

There is one replay of each kind, and every planner, :class:`~membptt.planning.plan.Plan`, the
benchmark rows and the report read them:

* :func:`simulate_ops` validates the ops and counts them in the paper's accounting
  (Gruslys et al. 2016, arXiv:1606.03401): *units* of memory, at every point of the replay, ``h_0``
  1 when the strategy's accounting counts it (HSM, MSM and baselines; not ISM), each stored
  hidden state 1, each stored internal state ``beta`` if its input state ``h_{i-1}`` is held
  at that moment (a stored hidden state ``i-1``, a stored internal state ``i-1``, or
  ``h_0``) and ``alpha`` otherwise; the working core and the cursor are not counted. With
  sizes the same in bytes (``h_0`` never counted: it is the caller's tensor). Its times are
  those of stepped execution: each maximal run of graph-free forwards (a hidden push ends a
  run) costs ``run_fixed + k * run_per_step``, each graph forward ``forward_graph``, each
  backward ``backward``; with unit costs the forward part is the paper's ``C(t, m)``.
* :func:`predict` prices what the executor runs under any cost model, from the plan's own
  segment ends: consecutive graph forwards inside one segment are one fused call (priced
  ``forward(L)`` at its length ``L``), consecutive backwards inside one segment one call
  (``backward(L)``), every maximal graph-free run one fused run (``run(L)``); without
  segment ends every step is its own segment (stepped execution, equal to
  :func:`simulate_ops`'s times). Bytes: a stored group of ``L`` internal states made by one
  call costs ``stored_bytes(L)``, or ``beta_bytes(L)`` while its input state is held; the
  internal states of a call that ends in the working core belong to the core's working set
  (``working(L)``, or ``core(L)`` for a core no stored internal state is linked to), so the
  predicted peak is the largest, over the plan's cores, of the stored bytes then plus that
  working set (and, between cores, the stored bytes plus the least working set). A working
  set counts a cursor and an incoming gradient, one hidden state each (the probe measures a
  core from a held state with a held gradient); where the plan itself holds that state --
  a core starting from a stored hidden state or ``h_0``, a run's cursor just stored -- or no
  gradient exists yet (before the first backward), it is not counted twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .costs import UNIT_COSTS, CostModel
from .errors import PlanError
from .ops import Backward, Drop, Forward
from .prices import Prices


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


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict` says of a plan under one cost model (times in the model's unit,
    seconds when probed; bytes beyond ``h_0``, inputs and parameters)."""

    forward_cost: float
    backward_cost: float
    stored_peak_bytes: int | None  # stored states at their peak (None without sizes)
    peak_bytes: int | None  # stored states plus the working set of the core then (None when
    #                         no working set is known)
    runs: int  # graph-free fused runs
    graph_calls: int  # fused forward calls with graph
    backward_calls: int
    segment_ends: tuple | None  # the segment ends priced (None: every step, stepped)
    # the longest graph-free call the plan's memory admits, where calls are planned
    # (CostModel.segments.run_bytes measured; the executor passes it on); None: the step's own
    run_cap: int | None = None

    @property
    def total_cost(self) -> float:
        return self.forward_cost + self.backward_cost

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("segment_ends")
        d["total_cost"] = self.total_cost
        return d


def _graph_calls(ops, is_end) -> dict[int, tuple[int, bool]]:
    """For every op index of a graph forward: (index of its call's first op, whether the call
    ends in the working core). A call is a maximal sequence of graph forwards of consecutive
    steps inside one segment."""
    calls: dict[int, tuple[int, bool]] = {}
    start = prev = None
    members: list[int] = []
    for k, op in enumerate(ops):
        if isinstance(op, Forward) and op.keep in ("internal", "core"):
            if prev is not None and prev.step == op.step - 1 and not is_end(prev.step):
                members.append(k)
            else:
                members = [k]
                start = k
            prev = op
            core = op.keep == "core"
            for j in members:
                calls[j] = (start, core)
            if core:
                prev = None
        else:
            prev = None
    return calls


class _Calls:
    """Calls of one kind being priced: the open call's length, the total and the count
    (``price`` None: the lengths are kept, priced at the end)."""

    def __init__(self, price):
        self.price, self.length, self.total, self.count = price, 0, 0.0, 0
        self.lengths: list[int] = []

    def close(self) -> None:
        if self.length:
            if self.price is None:
                self.lengths.append(self.length)
            else:
                self.total += self.price(self.length)
            self.count += 1
            self.length = 0


def predict(ops, seq_len: int, costs: CostModel, *, alpha: int | None = None,
            beta: int | None = None, segment_ends=None, own_cap: bool = True) -> Prediction:
    """Price valid ``ops`` (replayed by :func:`simulate_ops` first) as the executor runs them
    (module docstring); ``segment_ends``: the last step of every fused segment (None: every
    step is one, stepped execution). Where graph-free calls are planned
    (``costs.segments.run_bytes``), runs are split at the longest call whose transient fits
    what the plan's least core working set leaves beside a cursor and a gradient (the plan's
    predicted peak is then unchanged by them); ``own_cap=False`` prices them at the cap every
    plan admits instead (:meth:`Prices.floor_cap`, what the planners' tables use)."""
    T = int(seq_len)
    prices = Prices(costs, alpha, beta, stepped=segment_ends is None)
    ends = None if segment_ends is None else frozenset(segment_ends)

    def is_end(i: int) -> bool:
        return ends is None or i in ends or i >= T

    calls = _graph_calls(ops, is_end)
    sized = prices.sized
    hb = prices.hb or 0
    hidden: set[int] = set()
    group_of: dict[int, list] = {}  # stored internal step -> its group [first, count, bytes]
    groups_by_first: dict[int, list] = {}
    stored = 0
    stored_peak = 0
    core_peak = None
    least_work = None
    cursor = None
    backed = False  # a backward has run (an incoming gradient exists from then on)
    free_peak = 0  # stored bytes between cores, less a cursor or gradient counted twice

    def held(j: int) -> bool:
        return j == 0 or j in hidden or j in group_of

    def charge(g: list) -> None:
        nonlocal stored
        new = 0
        if sized and g[1] > 0:
            new = (prices.beta_bytes(g[1]) if held(g[0] - 1) else prices.stored_bytes(g[1]))
        stored += new - g[2]
        g[2] = new

    def recharge(j: int) -> None:  # the state j came or went: the group after it may change rate
        g = groups_by_first.get(j + 1)
        if g is not None:
            charge(g)

    runs, graph, back = _Calls(None), _Calls(prices.forward), _Calls(prices.backward)
    prev_back = None

    def close_back():
        nonlocal prev_back
        back.close()
        prev_back = None

    for k, op in enumerate(ops):
        if isinstance(op, Forward):
            close_back()
            i = op.step
            if op.keep in (None, "hidden"):
                graph.close()
                if cursor != i - 1:
                    runs.close()
                runs.length += 1
                if op.keep == "hidden":
                    runs.close()
                    hidden.add(i)
                    stored += hb if sized else 0
                    recharge(i)
            else:
                runs.close()
                start, to_core = calls[k]
                if start == k:
                    graph.close()
                graph.length += 1
                if op.keep == "core":
                    L = graph.length
                    first = i - L + 1
                    work = prices.core(L) if (first - 1) not in group_of else prices.working(L)
                    if work is not None:
                        least_work = work if least_work is None else min(least_work, work)
                        # the working set counts a cursor and an incoming gradient (the probe
                        # holds both apart from the core); a core that starts from a state the
                        # plan stores (or h_0) has no cursor of its own, and before the first
                        # backward there is no incoming gradient
                        held_in = first - 1 == 0 or (first - 1) in hidden
                        core_peak = max(core_peak or 0,
                                        stored + work - hb * (held_in + (not backed)))
                elif not to_core:  # a stored internal state (its call does not end in the core)
                    g = group_of.get(i - 1) if start != k else None
                    if g is None:
                        g = [i, 0, 0]
                        groups_by_first[i] = g
                    g[1] += 1
                    group_of[i] = g
                    charge(g)
                    recharge(i)
            cursor = i
        elif isinstance(op, Backward):
            runs.close()
            graph.close()
            i = op.step
            if prev_back != i + 1 or is_end(i):
                close_back()
            back.length += 1
            prev_back = i
            cursor = None
            backed = True
        elif isinstance(op, Drop):
            runs.close()
            graph.close()
            close_back()
            i = op.step
            if op.kind == "hidden":
                if i in hidden:
                    hidden.discard(i)
                    stored -= hb if sized else 0
            elif i in group_of:
                g = group_of.pop(i)
                g[1] -= 1
                if g[0] == i:  # the group's first state went: the next one starts it
                    del groups_by_first[i]
                    if g[1] > 0:
                        g[0] = i + 1
                        groups_by_first[i + 1] = g
                charge(g)
            if cursor == i:
                cursor = None
            recharge(i)
        stored_peak = max(stored_peak, stored)
        # during forwards between cores (not those of a call ending in a core) the executor
        # holds at most a run's working set (never above a core's) beside the stored states;
        # its cursor is the state just stored, if one was, and there is no incoming gradient
        # before the first backward. (A backward is its core's, counted above; after it, and
        # at drops, only the stored states and the new gradient are held, no working set.)
        if isinstance(op, Forward) and not (op.keep in ("internal", "core") and calls[k][1]):
            own = (not backed) + (op.keep == "hidden")
            free_peak = max(free_peak, stored - hb * own)
    runs.close()
    graph.close()
    close_back()
    cap = None
    if prices.chunked:
        cap = prices.floor_cap()
        if own_cap and least_work is not None:
            cap = max(cap, prices.cap_for(least_work - 2 * hb))
    runs.total = sum(prices.run(L, cap) for L in runs.lengths)
    peak = None
    if core_peak is not None:
        peak = max(core_peak, free_peak + least_work)
    return Prediction(runs.total + graph.total, back.total, stored_peak if sized else None,
                      peak if sized else None, runs.count, graph.count, back.count,
                      None if segment_ends is None else tuple(sorted(ends)), cap)
