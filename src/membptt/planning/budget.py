"""Memory budgets, resolved once per call: what was asked, in bytes and units, and the one
bytes -> units rule every planner uses.

Forms (strict; anything else is refused with these forms named):

* an integer (or an integer string such as ``"250"``): **hidden-state units**, the paper's
  accounting (Gruslys et al. 2016, arXiv:1606.03401: a budget of ``m`` memory slots);
* bytes with a suffix and no space: ``"512MiB"``, ``"1.5GB"``, ``"4096B"`` (B, kB, MB, GB, TB,
  KiB, MiB, GiB, TiB; case-insensitive);
* a percentage with no space: ``"5%"``, of a reference the cost model knows
  (:func:`reference_bytes`, ``percent_of``);
* ``"min"``: the smallest budget the planner accepts (:func:`membptt.min_memory`).

**Bytes to units** (:func:`units_for`, the only place this is done): a byte budget ``B`` for
stored states is ``floor(B / hidden_bytes)`` hidden-state slots, plus one when the strategy's
accounting counts the initial state ``h_0`` (HSM, MSM and the baselines; ISM does not): ``h_0``
is the caller's tensor, already in memory, so the byte budget is for what the plan stores
beyond it. :func:`bytes_for` is its inverse: the least byte budget giving ``units``.

**What a percentage is of** (``percent_of``, :func:`reference_bytes`):

* ``"stepped"`` (default): the bytes plain stepped BPTT holds (the step called ``T`` times
  under autograd, the summed loss backpropagated once). **Measured** when the cost model has
  ``stepped_peaks`` (the probe measures that peak at two short lengths, 8 and 32 steps, and a
  plain BPTT's peak is affine in ``T``: every step saves the same tensors): the measured value
  at a measured length, else the line through the two nearest measurements. Without a
  measurement it is estimated: ``T * beta_bytes + working_bytes`` with a working set known
  (``CostModel.working_bytes``): each step's saved tensors share their input state with the
  previous step's output, so a chain of ``T`` stored steps costs ``beta_bytes`` each; without
  a working set ``T * internal_bytes``, the full-cache memory of the paper (``T`` internal
  states); without sizes ``alpha * T`` units. Missing step values are taken from the
  segments' 1-step values (a fused call of one step is the stepped call). The note of a
  budget says which of these it used;
* ``"fused"``: the bytes fused full BPTT (one ``T``-step call with graph, backpropagated at
  once) holds, from the segment measurements: ``working_bytes(T)`` interpolated when ``T`` is
  at most the longest measured length ``L``; beyond it ``working_bytes(L) + (T - L) *
  beta_bytes(L) / L`` (an extrapolation, said so in the budget's note).

A byte or percentage budget bounds what the plan stores plus the working set where the cost
model knows it; the planners subtract the working set of what they run (a step, a block, a
chain) and turn the rest into units with :func:`units_for`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from .costs import CostModel
from .errors import BudgetTooSmall

_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
_BYTES_RE = re.compile(rf"^{_NUMBER}([kKmMgGtT]?i?[bB])$")
_PCT_RE = re.compile(rf"^{_NUMBER}%$")
_INT_RE = re.compile(r"^([0-9]+)$")
VALID_FORMS = ("an integer number of hidden-state units (e.g. 250), bytes with a suffix "
               "B/kB/MB/GB/KiB/MiB/GiB and no space (e.g. '512MiB'), a percentage with no "
               "space (e.g. '5%') or 'min' (the smallest feasible budget)")
PERCENT_OF = ("stepped", "fused")


@dataclass(frozen=True)
class Budget:
    """A budget as a plan used it: what was asked, the units the DP got, the byte budget."""

    requested: str  # what the caller gave, as text
    kind: str  # "units", "bytes", "fraction" or "min"
    units: int  # hidden-state units handed to the planner's DP
    bytes: int | None  # the byte budget, when given as bytes or derivable from sizes
    note: str  # how the units were obtained (reference, working set, rounding)

    def to_dict(self) -> dict:
        return {"requested": self.requested, "kind": self.kind, "units": self.units,
                "bytes": self.bytes, "note": self.note}


def _finite(memory, value: float) -> float:
    if not math.isfinite(value):  # '1e400%' parses to inf
        raise ValueError(f"memory budget {memory!r} is not a finite number; give {VALID_FORMS}")
    return value


def parse_memory(memory) -> tuple[str, float | None]:
    """Classify a budget: ("units", n) / ("bytes", n) / ("fraction", f) / ("min", None).

    Raises ValueError naming the value and the valid forms (:data:`VALID_FORMS`)."""
    if isinstance(memory, bool):
        raise ValueError(f"memory budget {memory!r} is not valid: give {VALID_FORMS}")
    if isinstance(memory, int):
        if memory < 0:
            raise ValueError(f"memory budget {memory!r} is negative; give a number of units "
                             ">= 1, or one of " + VALID_FORMS)
        return "units", memory
    if isinstance(memory, float):
        if not math.isfinite(memory) or memory != int(memory) or memory < 0:
            raise ValueError(f"memory budget {memory!r} in units must be a whole number >= 0; "
                             f"give {VALID_FORMS}")
        return "units", int(memory)
    if isinstance(memory, str):
        if memory == "min":
            return "min", None
        if m := _INT_RE.match(memory):
            return "units", int(m.group(1))
        if m := _PCT_RE.match(memory):
            value = _finite(memory, float(m.group(1)) / 100.0)
        elif (m := _BYTES_RE.match(memory)) and m.group(2).lower() in _UNITS:
            value = _finite(memory, float(m.group(1)) * _UNITS[m.group(2).lower()])
        else:
            raise ValueError(f"memory budget {memory!r} is not valid: give {VALID_FORMS}")
        if value <= 0:
            raise ValueError(f"memory budget {memory!r} must be positive; give {VALID_FORMS}")
        return ("fraction" if memory.endswith("%") else "bytes"), value
    raise ValueError(f"memory budget {memory!r} is not valid: give {VALID_FORMS}")


def check_percent_of(percent_of) -> str:
    if percent_of not in PERCENT_OF:
        raise ValueError(f"percent_of must be one of {', '.join(PERCENT_OF)}; got {percent_of!r}")
    return percent_of


# -- the one bytes <-> units rule ------------------------------------------------------------

def units_for(nbytes: int, hidden_bytes: int, count_initial: bool) -> int:
    """Hidden-state slots in ``nbytes`` of stored states (``h_0``'s slot added when counted);
    negative when ``nbytes`` is (the caller refuses that budget)."""
    return int(nbytes) // hidden_bytes + (1 if count_initial else 0)


def bytes_for(units: int, hidden_bytes: int, count_initial: bool) -> int:
    """The least byte budget for stored states that :func:`units_for` turns into ``units``."""
    return max(0, units - (1 if count_initial else 0)) * hidden_bytes


# -- references of percentages ---------------------------------------------------------------

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


def measured_stepped_bytes(seq_len: int, costs: CostModel) -> int | None:
    """Plain stepped BPTT's peak from the measured ``costs.stepped_peaks`` (the measured
    value at a measured length, else the line through the two nearest measurements); None
    without measurements."""
    pts = costs.stepped_peaks
    if not pts:
        return None
    for n, b in pts:
        if n == seq_len:
            return b
    j = next((i for i, (n, _) in enumerate(pts) if n > seq_len), len(pts))
    j = min(max(j, 1), len(pts) - 1)
    (n0, b0), (n1, b1) = pts[j - 1], pts[j]
    return max(1, math.ceil(b0 + (seq_len - n0) * (b1 - b0) / (n1 - n0)))


def stepped_bptt_bytes(seq_len: int, costs: CostModel) -> int | None:
    """Plain stepped BPTT's bytes: measured (:func:`measured_stepped_bytes`) when the cost
    model has ``stepped_peaks``, else ``T * beta_bytes + working_bytes`` with a known working
    set, else ``T * internal_bytes`` (module docstring); None without sizes."""
    measured = measured_stepped_bytes(seq_len, costs)
    if measured is not None:
        return measured
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
    """The bytes a percentage is of, and their name; ``(None, "")`` without sizes."""
    if check_percent_of(percent_of) == "fused":
        ref = fused_bptt_bytes(seq_len, costs)
        extra = "" if seq_len <= costs.segments.lengths[-1] else ", extrapolated"
        return ref, f"fused BPTT's {ref:,} B at T={seq_len}{extra}"
    ref = stepped_bptt_bytes(seq_len, costs)
    if ref is None:
        return None, ""
    if costs.stepped_peaks:
        lengths = [n for n, _ in costs.stepped_peaks]
        how = ("measured" if seq_len in lengths else
               "affine in T through its peaks measured at "
               + " and ".join(map(str, lengths)) + " steps")
        return ref, f"plain stepped BPTT's measured peak, {ref:,} B at T={seq_len} ({how})"
    work = ", working set included" if (costs.working_bytes is not None
                                        or costs.segments is not None) else ""
    return ref, f"stepped BPTT's estimated {ref:,} B at T={seq_len}{work}"


# -- a request, resolved once --------------------------------------------------------------------

@dataclass(frozen=True)
class BudgetRequest:
    """A budget as requested, resolved once per :func:`membptt.plan` call.

    ``nbytes``: the byte budget (bytes, or a percentage of a known reference), else None;
    ``units``: a unit budget (units, or a percentage of ``alpha * T`` units without sizes),
    else None. ``reference`` / ``reference_note``: what a percentage is of (for messages, also
    given for byte budgets when known)."""

    text: str
    kind: str
    value: float | None
    nbytes: int | None
    units: int | None
    reference: int | None
    reference_note: str
    note: str
    given: object = None  # the budget as the caller gave it

    def percent(self, nbytes: float) -> str:
        """``nbytes`` as a percentage of the reference ("" when none is known)."""
        if not self.reference:
            return ""
        return f"{100 * nbytes / self.reference:.3g}% of {self.reference_note}"

    def describe(self) -> str:
        """The request as messages show it: ``'5%' (12,345 B: 5% of stepped BPTT's ...)``."""
        if self.nbytes is not None:
            pct = self.percent(self.nbytes) if self.kind == "fraction" else ""
            return f"{self.text!r} ({self.nbytes:,} B" + (f": {pct})" if pct else ")")
        return f"{self.text!r} ({self.units} units)"


def request(memory, *, seq_len: int, costs: CostModel, alpha: int | None,
            percent_of: str = "stepped") -> BudgetRequest:
    """Resolve ``memory`` (never ``"min"``: the API resolves that first) against ``costs``."""
    return replace(_request(memory, seq_len, costs, alpha, percent_of), given=memory)


def _request(memory, seq_len: int, costs: CostModel, alpha: int | None,
             percent_of: str) -> BudgetRequest:
    kind, value = parse_memory(memory)
    ref, ref_note = reference_bytes(seq_len, costs, percent_of)
    text = str(memory)
    if kind == "units":
        return BudgetRequest(text, kind, value, None, int(value), ref, ref_note, "as given")
    if kind == "bytes":
        if not costs.hidden_bytes:
            raise ValueError(
                f"memory budget {memory!r} is in bytes, which needs state sizes: pass "
                "costs=membptt.probe(step, state0, inputs) or CostModel(hidden_bytes=..., "
                "internal_bytes=...)")
        return BudgetRequest(text, kind, value, int(value), None, ref, ref_note, f"{int(value):,} B")
    if kind == "fraction":
        if ref is not None:
            nbytes = int(value * ref)
            return BudgetRequest(text, kind, value, nbytes, None, ref, ref_note,
                           f"{value:.6g} x {ref_note} = {nbytes:,} B")
        if alpha is None:
            raise ValueError(
                f"memory budget {memory!r} is a fraction of the full-cache memory "
                "(T internal states), which needs alpha (internal-state size in "
                "hidden-state units) or a CostModel with state sizes")
        exact = value * alpha * seq_len
        units = math.floor(exact + 1e-9)
        return BudgetRequest(text, kind, value, None, units, None, "",
                       f"{value:.6g} x full-cache memory ({seq_len} x alpha={alpha} units) "
                       f"= {exact:.6g} -> {units} units (rounded down)")
    raise ValueError(f"memory budget {memory!r}: 'min' must be resolved by membptt.plan")


def too_small(req: BudgetRequest, *, strategy: str, seq_len: int, planner: str,
              minimum_units: int | None = None, minimum_bytes: int | None = None,
              what: str = "") -> BudgetTooSmall:
    """The refusal of ``req``: names the request, the minimum in bytes (and as a percentage of
    the same reference) or in units, and how to ask for the minimum."""
    if minimum_bytes is not None:
        pct = req.percent(minimum_bytes)
        need = f"{minimum_bytes:,} B" + (f" ({pct})" if pct else "")
        minimum, unit = minimum_bytes, "bytes"
    else:
        need = f"{minimum_units} units"
        minimum, unit = minimum_units, "units"
    return BudgetTooSmall(
        f"memory budget {req.describe()} is below the minimum of strategy {strategy!r} for "
        f"seq_len={seq_len} (planner {planner!r}{what}): {need}; memory='min' plans at the "
        "minimum (membptt.min_memory gives it)",
        requested=req.given, minimum=minimum, strategy=strategy, seq_len=seq_len, unit=unit,
        minimum_bytes=minimum_bytes)
