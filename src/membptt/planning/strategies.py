"""Planning strategies: each is one function ``(request) -> ops`` plus one registry line.

Add a strategy::

    @register("my-strategy", "one line for --help", min_memory=lambda t, a, b: 1)
    def my_strategy(req: Request) -> list[Op]:
        ...

It is then available to ``membptt.plan``, the CLI, the simulator tests (every registered strategy
is replayed over a grid), the executor and the benchmark pipeline. A strategy of the paper's
DP family declares which planners apply to it (``planners=("steps", "blocks")``) and its DP
family (``dp_family``), which the block planner (:mod:`.blocks`) solves on blocks; the chain
planner (:mod:`.chains`, BPTT-HSM with fused chains) applies to a strategy that declares
``"chains"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from . import dp, limits
from .costs import UNIT_COSTS, CostModel
from .ops import Backward, Drop, Forward, Op


@dataclass(frozen=True)
class Request:
    seq_len: int
    memory: int | None  # hidden-state units (None: the strategy's own default)
    alpha: int | None
    beta: int | None  # None: no beta form (internal states cost alpha)
    costs: CostModel
    options: dict = field(default_factory=dict)  # the strategy's own options (Strategy.options)
    max_table_bytes: int | None = None  # None: limits.DEFAULT_MAX_TABLE_BYTES
    max_ops: int | None = None  # None: limits.DEFAULT_MAX_OPS
    max_dp_work: int | None = None  # None: limits.DEFAULT_MAX_DP_WORK

    def check_ops(self, n: int, strategy: str, exact: bool = True) -> None:
        """Refuse a plan of ``n`` ops above the op limit (:mod:`membptt.planning.limits`)."""
        limits.check_ops(n, limits.max_ops(self.max_ops), strategy=strategy,
                         seq_len=self.seq_len, exact=exact)

    @property
    def beta_eff(self) -> int:
        return self.alpha if self.beta is None else self.beta


@dataclass(frozen=True)
class Strategy:
    name: str
    build: Callable[[Request], tuple[list[Op], dict]]
    description: str
    count_initial: bool  # does h_0 count in this strategy's budget?
    needs_memory: bool  # False: a budget is optional
    needs_alpha: bool
    min_memory: Callable[[int, int | None, int | None], int]
    options: tuple = ()  # keyword options the builder reads from Request.options
    planners: tuple = ("steps",)  # the planners that apply (membptt.plan(planner=...))
    # (alpha_units, beta_units) -> (DP family, units per slot): what the block planner solves
    dp_family: Callable[[int, int], tuple[dp.Family, int]] | None = None


STRATEGIES: dict[str, Strategy] = {}


def register(name: str, description: str, *, count_initial: bool = True,
             needs_memory: bool = True, needs_alpha: bool = False,
             min_memory: Callable | None = None, options: tuple = (),
             planners: tuple = ("steps",), dp_family: Callable | None = None):
    """Register a strategy. ``options`` names the extra keyword arguments of
    :func:`membptt.plan` that the builder reads from ``Request.options``; any other keyword is
    refused (a misspelt option must not be ignored silently). ``planners`` (besides
    ``"steps"``, which runs ``fn``): ``"blocks"`` needs ``dp_family``; ``"chains"`` is
    BPTT-HSM's recursion with fused chains (module docstring)."""
    if "blocks" in planners and dp_family is None:
        raise ValueError(f"strategy {name!r}: the block planner needs dp_family")

    def deco(fn):
        STRATEGIES[name] = Strategy(name, fn, description, count_initial, needs_memory,
                                    needs_alpha, min_memory or (lambda t, a, b: 1),
                                    tuple(options), tuple(planners), dp_family)
        return fn

    return deco


def get(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: "
                         + ", ".join(sorted(STRATEGIES)))
    return STRATEGIES[name]


# -- helpers -----------------------------------------------------------------------------------

def _forwards(a: int, b: int, last_keep) -> list[Op]:
    """Graph-free forwards of steps a..b-1 then step b with ``last_keep``."""
    return [Forward(i) for i in range(a, b)] + [Forward(b, last_keep)]


def emit_from_table(tab: dp.Table, t: int, m: int, *, internal_size=None,
                    max_ops: int | None = None) -> list[Op]:
    """Compile the DP's choices for ``t`` steps with ``m`` units into ops (iterative).

    Stops with :class:`~membptt.planning.limits.PlanTooLarge` as soon as the list would exceed
    ``max_ops`` ops (default: no limit)."""
    fam = tab.family
    ops: list[Op] = []
    stack: list = [("solve", 0, t, m)]
    while stack:
        if max_ops is not None and len(ops) > max_ops:
            limits.check_ops(len(ops), max_ops, strategy=fam.name or "DP", seq_len=t,
                             exact=False)
        item = stack.pop()
        if item[0] == "op":
            ops.append(item[1])
            continue
        _, off, n, mm = item
        if n == 0:
            continue
        kind, y = tab.choice(n, mm)
        if kind == dp.HIDDEN:
            ops.extend(_forwards(off + 1, off + y, "hidden"))
            stack.append(("solve", off, y, mm))
            stack.append(("op", Drop(off + y, "hidden")))
            stack.append(("solve", off + y, n - y, mm - 1))
        elif kind == dp.INTERNAL and y < n:
            size = fam.beta if y == 1 else fam.alpha
            ops.extend(_forwards(off + 1, off + y, "internal"))
            stack.append(("solve", off, y - 1, mm))
            stack.append(("op", Drop(off + y, "internal")))
            stack.append(("op", Backward(off + y)))
            stack.append(("solve", off + y, n - y, mm - size))
        else:  # end: step off + n into the working core
            ops.extend(_forwards(off + 1, off + n, "core"))
            ops.append(Backward(off + n))
            stack.append(("solve", off, n - 1, mm))
    return ops


# Under unit costs, forward counts known before any table is built: exact for HSM and ISM
# (the paper's closed forms), a lower bound for MSM (storing an internal state of 1 slot where
# MSM stores a hidden or internal state of >= 1 unit maps every MSM plan with m units to an ISM
# plan with m slots and no more forwards; tests check C_MSM >= C_ISM on a grid).
_FORWARDS_AT_LEAST = {"hsm": dp.c_hsm_closed, "ism": dp.c_ism_closed, "msm": dp.c_ism_closed}


def _dp_plan(req: Request, family: dp.Family, m: int) -> tuple[list[Op], dict]:
    unit = req.costs.time_key() == UNIT_COSTS.time_key()  # then C(t, m) is the forward count
    if unit and family.name in _FORWARDS_AT_LEAST and m >= 1:  # refuse before the DP
        least = _FORWARDS_AT_LEAST[family.name](req.seq_len, min(m, req.seq_len + 1))
        req.check_ops(least + req.seq_len, family.name, exact=False)  # drops on top
    tab = dp.table(req.seq_len, m, family, req.costs, max_bytes=req.max_table_bytes,
                   max_work=req.max_dp_work)
    cost = tab.cost(req.seq_len, m)
    if unit:
        req.check_ops(int(cost) + req.seq_len, family.name, exact=False)  # drops on top
    ops = emit_from_table(tab, req.seq_len, m, max_ops=limits.max_ops(req.max_ops))
    return ops, {"dp_cost": cost, "dp_memory": m}


# -- the paper's strategies -------------------------------------------------------------------

@register("hsm", "BPTT-HSM: optimal DP storing hidden states only (budget counts h_0)",
          planners=("steps", "blocks", "chains"), dp_family=lambda a, b: (dp.hsm_family(), 1))
def hsm(req: Request):
    return _dp_plan(req, dp.hsm_family(), req.memory)


@register("ism", "BPTT-ISM: optimal DP storing internal states only (floor(memory/alpha) "
          "slots; h_0 free)", count_initial=False, needs_alpha=True,
          min_memory=lambda t, a, b: a, planners=("steps", "blocks"),
          dp_family=lambda a, b: (dp.ism_family(), a))
def ism(req: Request):
    slots = req.memory // req.alpha
    ops, info = _dp_plan(req, dp.ism_family(), slots)
    info["slots"] = slots
    return ops, info


# MSM's planners include chains: an HSM plan (hidden states and lone chains) is an MSM plan
# within the same budget, so the front door may pick it when it is the fastest
@register("msm", "BPTT-MSM: optimal DP mixing hidden and internal states (beta form with "
          "--beta)", needs_alpha=True, planners=("steps", "blocks", "chains"),
          dp_family=lambda a, b: (dp.msm_family(a, b), 1))
def msm(req: Request):
    return _dp_plan(req, dp.msm_family(req.alpha, req.beta), req.memory)


# -- baselines ------------------------------------------------------------------------------------

def _full_ops(t: int) -> list[Op]:
    ops: list[Op] = [Forward(i, "internal") for i in range(1, t)] + [Forward(t, "core"),
                                                                     Backward(t)]
    for i in range(t - 1, 0, -1):
        ops += [Backward(i), Drop(i, "internal")]
    return ops


def _full_units(t: int, alpha: int, beta: int) -> int:
    return 1 + (t - 1) * beta


@register("full", "standard BPTT: store every internal state (the last one is the core)",
          needs_memory=False, needs_alpha=True,
          min_memory=lambda t, a, b: _full_units(t, a, a if b is None else b))
def full(req: Request):
    req.check_ops(3 * req.seq_len - 1, "full")
    return _full_ops(req.seq_len), {}


@register("recompute-all", "one slot: every step recomputed from h_0 (t(t+1)/2 forwards)",
          needs_memory=False)
def recompute_all(req: Request):
    t = req.seq_len
    req.check_ops(t * (t + 1) // 2 + t, "recompute-all")
    ops: list[Op] = []
    for i in range(t, 0, -1):
        ops += _forwards(1, i, "core") + [Backward(i)]
    return ops, {}


def _balanced(t: int, k: int) -> list[int]:
    """``k`` segment lengths summing to ``t``, differing by at most one, longer ones last."""
    q, r = divmod(t, k)
    return [q] * (k - r) + [q + 1] * r


def chen_peak(t: int, k: int, beta: int) -> int:
    """Peak units of :func:`chen` with ``k`` balanced segments (h_0 counted).

    While segment j (1-based) is backpropagated, h_0 and j - 1 boundaries are held and s_j - 1
    internal states (each input held, so beta units each); the maximum over j is reached at
    the last segment of each length.
    """
    q, r = divmod(t, k)
    peaks = []
    if k - r >= 1:
        peaks.append(k - r + (q - 1) * beta)
    if r >= 1:
        peaks.append(k + q * beta)
    return max(peaks)


def chen_forward_cost(t: int, k: int, costs: CostModel) -> float:
    """First sweep: runs over segments 1..k-1; every step once more with its graph."""
    q, r = divmod(t, k)
    last = q + 1 if r else q
    return (k - 1) * costs.run_fixed + (t - last) * costs.run_per_step + t * costs.forward_graph


@register("chen", "Chen et al. 2016: sqrt(t) balanced segments, boundary hidden states "
          "stored, one segment's internal states at a time; with a budget, the segment "
          "count that fits it at least cost", needs_memory=False, needs_alpha=True,
          min_memory=lambda t, a, b: min(chen_peak(t, k, a if b is None else b)
                                         for k in _chen_candidates(t)),
          options=("segments",))
def chen(req: Request):
    t, beta = req.seq_len, req.beta_eff
    if "segments" in req.options:  # a fixed segment count instead of the fitted one
        k = _fixed_int(req, "segments", 1, t, lambda k: chen_peak(t, k, beta))
    elif req.memory is None:
        k = max(1, round(math.sqrt(t)))
    else:
        best = None
        for k in _chen_candidates(t):
            peak = chen_peak(t, k, beta)
            if peak > req.memory:
                continue
            key = (chen_forward_cost(t, k, req.costs), peak, k)
            if best is None or key < best:
                best = key
        k = best[2]
    sizes = _balanced(t, k)
    req.check_ops(4 * t - sizes[-1] - 1, "chen")  # forwards, backwards and drops
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    ops: list[Op] = []
    for j in range(1, k):  # first sweep: keep the boundaries b_1..b_{k-1}
        ops += _forwards(bounds[j - 1] + 1, bounds[j], "hidden")
    for j in range(k, 0, -1):  # segment j from boundary b_{j-1}
        a, b = bounds[j - 1] + 1, bounds[j]
        ops += [Forward(i, "internal") for i in range(a, b)] + [Forward(b, "core"), Backward(b)]
        for i in range(b - 1, a - 1, -1):
            ops += [Backward(i), Drop(i, "internal")]
        if j > 1:
            ops.append(Drop(bounds[j - 1], "hidden"))
    return ops, {"segments": k, "segment_lengths": sizes}


def _fixed_int(req: Request, name: str, lo: int, hi: int, peak) -> int:
    """The option ``name`` checked to be an integer in ``[lo, hi]`` whose plan (peak units
    ``peak(k)``) fits the budget."""
    k = req.options[name]
    if isinstance(k, bool) or not isinstance(k, int) or not lo <= k <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}] for seq_len={req.seq_len},"
                         f" got {k!r}")
    if req.memory is not None and peak(k) > req.memory:
        raise ValueError(f"{name}={k} needs {peak(k)} memory units, above the budget of "
                         f"{req.memory} units; omit {name} to fit the budget")
    return k


def _chen_candidates(t: int):
    return range(1, t + 1)


RECURSIVE_MAX_BRANCHING = 256


def _rec_candidates(t: int):
    """Branching factors tried when fitting a budget: 2..min(t, RECURSIVE_MAX_BRANCHING)."""
    return range(2, max(2, min(t, RECURSIVE_MAX_BRANCHING)) + 1)


def _rec_parts(n: int, k: int) -> list[int]:
    return _balanced(n, min(k, n))[::-1]  # longer parts first


def chen_recursive_stats(t: int, k: int, costs: CostModel) -> tuple[float, int]:
    """(forward cost, peak units) of :func:`chen_recursive` with branching ``k``."""
    memo: dict[int, tuple[float, int]] = {}

    def go(n: int) -> tuple[float, int]:
        if n in memo:
            return memo[n]
        if n == 1:
            res = (costs.forward_graph, 0)
        else:
            parts = _rec_parts(n, k)
            c = sum(costs.run(s) for s in parts[:-1])
            extra = 0
            for j, s in enumerate(parts):
                cs, es = go(s)
                c += cs
                extra = max(extra, j + es)  # j boundaries above the start are held
            res = (c, extra)
        memo[n] = res
        return res

    c, e = go(t)
    return c, 1 + e


@register("chen-recursive", "Chen et al. 2016 recursive: split into k parts, store their "
          "boundary hidden states, recurse (k = 2 needs about log2(t) states); with a budget, "
          "the k that fits it at least cost", needs_memory=False,
          min_memory=lambda t, a, b: min(chen_recursive_stats(t, k, CostModel())[1]
                                         for k in _rec_candidates(t)),
          options=("branching",))
def chen_recursive(req: Request):
    t = req.seq_len
    if "branching" in req.options:  # a fixed branching factor instead of the fitted one
        k = _fixed_int(req, "branching", 2, max(2, t),
                       lambda k: chen_recursive_stats(t, k, req.costs)[1])
    elif req.memory is None:
        k = 2
    else:
        best = None
        for k in _rec_candidates(t):
            c, peak = chen_recursive_stats(t, k, req.costs)
            if peak <= req.memory and (best is None or (c, peak, k) < best):
                best = (c, peak, k)
        k = best[2]
    forwards, _ = chen_recursive_stats(t, k, UNIT_COSTS)
    req.check_ops(int(forwards) + t, "chen-recursive", exact=False)  # drops come on top
    ops: list[Op] = []

    def rec(start: int, n: int) -> None:  # steps start+1 .. start+n, h_start available
        if n == 1:
            ops.extend([Forward(start + 1, "core"), Backward(start + 1)])
            return
        parts = _rec_parts(n, k)
        bounds = [start]
        for s in parts:
            bounds.append(bounds[-1] + s)
        for j in range(1, len(parts)):
            ops.extend(_forwards(bounds[j - 1] + 1, bounds[j], "hidden"))
        for j in range(len(parts), 0, -1):
            rec(bounds[j - 1], parts[j - 1])
            if j > 1:
                ops.append(Drop(bounds[j - 1], "hidden"))

    rec(0, t)
    return ops, {"branching": k}
