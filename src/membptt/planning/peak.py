"""Budgets that bound the real peak: stored states plus the working set, in bytes.

A plan's *stored* peak (``Plan.peak_bytes``) is what the paper's budget counts. What a training
iteration really holds on top of it is the *working set*: the working core's forward and
backward, transients, the cursor, the incoming gradient and parameter-gradient buffers.
``CostModel.working_bytes`` measures it for one step as the core (stepped execution);
``SegmentCosts.working_bytes[j]`` for an ``L``-step fused segment as the core.

When the cost model carries a working set, a byte or percentage budget bounds
**stored states + working set**: the DP gets ``budget - working`` for stored states, and
``Plan.predicted_peak_bytes`` is the simulated stored peak plus that working set, so
``predicted_peak_bytes <= budget``. Without a working set the rules of
:mod:`membptt.planning.budget` apply unchanged (the stored states alone are bounded).

**What a percentage is of** (``percent_of``):

* ``"stepped"`` (default): the bytes plain stepped BPTT holds, ``T * beta_bytes +
  working_bytes`` when a working set is known (each step's saved tensors share their input
  state with the previous step's output, so a chain of ``T`` stored steps costs ``beta_bytes``
  each: measured at T = 1000, hidden 256, batch 64, this is within 2 % of plain BPTT's
  measured peak, where ``T * internal_bytes`` was 24 % above it); ``T * internal_bytes``
  when no working set is known, which is the full-cache memory of
  :mod:`~membptt.planning.budget`; ``alpha * T`` units without sizes; the segments' 1-step
  ``stored_bytes`` / ``beta_bytes`` / ``working_bytes`` stand in for missing step values);
* ``"fused"``: the bytes fused full BPTT (one ``T``-step call with graph, backpropagated at
  once) holds, estimated from the segment measurements: ``working_bytes(T)`` interpolated when
  ``T`` is at most the longest measured length ``L``; beyond it, ``working_bytes(L) + (T - L) *
  beta_bytes(L) / L`` (the longest segment's working set plus the further steps' graph at that
  segment's per-step rate; the backward transients are taken as those of length ``L``, an
  estimate, not a measurement). Needs ``costs.segments``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .budget import VALID_FORMS, Budget, parse_memory
from .costs import CostModel, costs_and_sizes

PERCENT_OF = ("stepped", "fused")


def check_percent_of(percent_of) -> str:
    if percent_of not in PERCENT_OF:
        raise ValueError(f"percent_of must be one of {', '.join(PERCENT_OF)}; got {percent_of!r}")
    return percent_of


def fused_bptt_bytes(seq_len: int, costs: CostModel) -> int:
    """Estimated live bytes of fused full BPTT over ``seq_len`` steps (module docstring)."""
    seg = costs.segments
    if seg is None:
        raise ValueError("a percentage of fused BPTT's bytes (percent_of='fused') needs "
                         "costs.segments (fused segment measurements, e.g. from the probe)")
    L = seg.lengths[-1]
    if seq_len <= L:
        return math.ceil(seg.at("working_bytes", seq_len))
    return math.ceil(seg.working_bytes[-1] + (seq_len - L) * seg.beta_bytes[-1] / L)


def stepped_bptt_bytes(seq_len: int, costs: CostModel) -> int | None:
    """``T * beta_bytes + working_bytes`` with a known working set, else ``T *
    internal_bytes`` (module docstring); None without sizes.

    Where the step values are missing and segments are given, the segments' 1-step values
    stand in (a fused call of one step is the stepped call)."""
    seg = costs.segments
    if costs.has_sizes:
        internal, beta = costs.internal_bytes, costs.beta_bytes
    elif seg is not None:
        internal, beta = seg.stored_bytes[0], seg.beta_bytes[0]
    else:
        return None
    work = costs.working_bytes
    if work is None and seg is not None:
        work = seg.working_bytes[0]
    if work is None:
        return seq_len * internal
    return seq_len * (beta if beta is not None else internal) + work


def reference_bytes(seq_len: int, costs: CostModel, percent_of: str) -> tuple[int | None, str]:
    """The bytes a percentage is of, and a note naming them."""
    if check_percent_of(percent_of) == "fused":
        return fused_bptt_bytes(seq_len, costs), f"fused BPTT's bytes (T={seq_len}, estimated)"
    ref = stepped_bptt_bytes(seq_len, costs)
    if ref is None:
        return None, ""
    return ref, f"stepped BPTT's bytes ({ref} B for T={seq_len}, working set included)"


def requested_bytes(memory, *, seq_len: int, costs: CostModel, percent_of: str
                    ) -> tuple[str, float, int | None, str]:
    """Classify ``memory`` and, for bytes and percentages, the byte budget it means.

    Returns ``(kind, value, nbytes, note)``; ``nbytes`` is None for unit budgets and for
    percentages without state sizes (then the unit rule of :mod:`.budget` applies).
    """
    kind, value = parse_memory(memory)
    if kind == "units":
        if value < 0:
            raise ValueError(f"memory budget {memory!r} is negative; give a number of units >= 1")
        return kind, value, None, "as given"
    if value <= 0:
        raise ValueError(f"memory budget {memory!r} must be positive; give {VALID_FORMS}")
    if kind == "bytes":
        return kind, value, int(value), f"{value:.0f} B"
    ref, what = reference_bytes(seq_len, costs, percent_of)
    if ref is None:
        return kind, value, None, ""
    nbytes = value * ref
    return kind, value, int(nbytes), f"{value:.6g} x {what} = {nbytes:.0f} B"


def step_budget_with_working_set(memory, *, seq_len: int, costs: CostModel, count_initial: bool,
                                 percent_of: str) -> Budget | None:
    """The budget of a step-level plan when a byte/percentage budget must also hold the
    working set (``costs.working_bytes`` set) or is a percentage of fused BPTT; None when the
    rules of :func:`membptt.planning.budget.resolve` apply unchanged."""
    kind, _ = parse_memory(memory)
    if kind == "units" or (costs.working_bytes is None and percent_of == "stepped"):
        return None
    _, _, nbytes, note = requested_bytes(memory, seq_len=seq_len, costs=costs,
                                         percent_of=percent_of)
    if nbytes is None or not costs.hidden_bytes:
        raise ValueError(
            f"memory budget {memory!r} in bytes needs state sizes: pass "
            "costs=membptt.probe(step, state0, inputs) or CostModel(hidden_bytes=..., "
            "internal_bytes=...)")
    work = costs.working_bytes or 0
    avail = nbytes - work
    units = math.floor(avail / costs.hidden_bytes + 1e-9) + (1 if count_initial else 0)
    note += (f"; minus the stepped working set {work} B = {avail} B for stored states; "
             f"floor({avail} B / {costs.hidden_bytes} B per hidden state)"
             + (" + 1 (h_0)" if count_initial else "") + f" = {units} units")
    return Budget(str(memory), kind, units, nbytes, note)


@dataclass(frozen=True)
class MinimumBudget:
    """The smallest feasible budget: ``units`` (hidden-state units, the paper's accounting) and
    ``bytes`` (the smallest byte budget that resolves to a feasible plan, working set included
    when known; None without state sizes); ``block`` is the block length it was found for
    (None for step-level planning)."""

    strategy: str
    seq_len: int
    units: int
    bytes: int | None
    block: int | None


def min_memory(strategy: str, seq_len: int, *, alpha=None, beta=None,
               costs: CostModel | None = None, block=None) -> MinimumBudget:
    """The smallest budget ``membptt.plan(strategy, seq_len, ...)`` accepts with these
    arguments (same meaning as in :func:`membptt.plan`; ``block="auto"`` takes the least
    over the candidate block lengths: least bytes when sizes are known, else least units)."""
    from . import blocks
    from . import strategies as S

    strat = S.get(strategy)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be an integer >= 1, got {seq_len!r}")
    costs, alpha, beta = costs_and_sizes(costs, alpha, beta)
    ci = 1 if strat.count_initial else 0
    block = blocks.block_arg(block, strategy, costs)
    if block == "chains":  # a one-step chain with nothing stored (membptt.planning.chains)
        if costs.segments is None:
            raise ValueError("block='chains' needs costs with segments "
                             "(costs=membptt.probe(step, state0, inputs))")
        prices = blocks.Prices(costs, alpha, beta)
        nbytes = min(prices.core(L) for L in range(1, min(seq_len, costs.segments.lengths[-1]) + 1))
        return MinimumBudget(strategy, seq_len, 1, nbytes, None)
    if block is None:
        if alpha is None and strat.needs_alpha:
            raise ValueError(f"strategy {strategy!r} needs alpha (internal-state size in "
                             "hidden-state units): pass alpha=... or costs with state sizes")
        units = strat.min_memory(seq_len, alpha, beta)
        nbytes = None
        if costs.hidden_bytes:
            nbytes = (units - ci) * costs.hidden_bytes + (costs.working_bytes or 0)
        return MinimumBudget(strategy, seq_len, units, nbytes, None)
    prices = blocks.Prices(costs, alpha, beta)
    if not prices.sized and alpha is None and strategy != "hsm":
        raise ValueError(f"strategy {strategy!r} needs alpha (internal-state size in "
                         "hidden-state units): pass alpha=... or costs with state sizes")
    best = None
    for k in blocks.candidate_lengths(seq_len, costs, block):
        bounds = blocks.block_bounds(seq_len, k)
        r = seq_len - bounds[-2]
        a_block = max(prices.stored_units(k), prices.stored_units(r))
        low = blocks.minimum_block_memory(strategy, a_block)
        units = blocks.reserve_units(prices, k, r)[0] + low
        nbytes = None
        if prices.sized:
            nbytes = blocks.reserve_bytes(prices, k, r)[0] + (low - ci) * prices.hb
        cand = MinimumBudget(strategy, seq_len, units, nbytes, k)
        if best is None or (nbytes if prices.sized else units) < (
                best.bytes if prices.sized else best.units):
            best = cand
    return best
