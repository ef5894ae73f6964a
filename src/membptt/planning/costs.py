"""Cost model and state sizes used by the planners and the simulator.

Time model (all in one arbitrary unit; seconds when measured by ``membptt.probe``):

* a *run* of ``k >= 1`` consecutive graph-free forward steps costs ``run_fixed + k * run_per_step``
  (a fused multi-step kernel has a launch cost and a per-step cost; a Python loop has
  ``run_fixed = 0``); a run of zero steps costs nothing;
* a forward step with its graph kept (an internal state or the working core) costs
  ``forward_graph``;
* a backward step costs ``backward``.

With :data:`UNIT_COSTS` (``0, 1, 1, 2``) the forward part of the predicted cost is the paper's
``C(t, m)`` (number of forward operations) and the total is the paper's ``C + 2t``.

Sizes (optional, bytes): ``hidden_bytes`` is one hidden state (for an LSTM the pair (h, c)),
``internal_bytes`` what autograd keeps for one step, ``beta_bytes`` the same when the step's
input hidden state is already stored (the paper's beta form). The planners count memory in
*hidden-state units*; ``alpha`` and ``beta`` in units are the byte ratios rounded up.

Optional, for planning what a fused executor runs (issue 9): ``working_bytes`` is the stepped
working set (peak live bytes beyond the stored states while one step is the working core:
its forward and backward, transients, the cursor, the incoming gradient, parameter-gradient
buffers), and ``segments`` (:class:`SegmentCosts`) the measured costs and sizes of fused
multi-step calls by length, which block planning (:mod:`membptt.planning.blocks`) prices.
Neither enters :meth:`CostModel.time_key`: the step-level DP does not read them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import asdict, dataclass, fields, replace

_SEGMENT_TIMES = ("forward", "backward")
_SEGMENT_BYTES = ("stored_bytes", "beta_bytes", "working_bytes")
_OPTIONAL_BYTES = ("core_bytes",)


def _positive_number(owner: str, name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{owner}.{name} must hold finite numbers > 0, got {v!r}")


def _lengths(owner: str, name: str, v) -> None:
    if not v:
        raise ValueError(f"{owner}.{name} must be a non-empty tuple of lengths, got {v!r}")
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise ValueError(f"{owner}.{name} must hold integers >= 1, got {x!r} in {v!r}")
    if any(b <= a for a, b in zip(v, v[1:])):
        raise ValueError(f"{owner}.{name} must be strictly increasing, got {v!r}")


def interpolate(xs: tuple, ys: tuple, x: float) -> float:
    """Piecewise-linear interpolation of the points ``(xs[i], ys[i])`` at ``x`` (no affine
    assumption between the points).

    Outside the measured range nothing is fitted: below ``xs[0]`` the value at ``xs[0]`` is
    used (an upper bound for a quantity that grows with length); beyond ``xs[-1]`` the
    *per-step rate of the longest measurement* is kept, ``ys[-1] * x / xs[-1]`` (no launch
    cost is extrapolated, so long calls are priced at the longest call's rate).
    """
    if x <= xs[0]:
        return float(ys[0])
    if x >= xs[-1]:
        return float(ys[-1]) * x / xs[-1]
    j = bisect_left(xs, x)
    if xs[j] == x:
        return float(ys[j])
    x0, x1, y0, y1 = xs[j - 1], xs[j], ys[j - 1], ys[j]
    return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def upper(xs: tuple, ys: tuple, x: float) -> float:
    """Bytes at ``x`` steps from measurements at ``xs``: the value at the least measured
    length ``>= x`` (bytes grow with length but not linearly to the byte: the fused LSTM's
    working set steps up by 21 KB between 63 and 64 steps, so a line between measured points
    can fall below the truth and a budget would not hold); beyond ``xs[-1]`` the longest
    measurement's per-step rate, as :func:`interpolate`."""
    if x >= xs[-1]:
        return float(ys[-1]) * max(x, xs[-1]) / xs[-1]
    return float(ys[bisect_left(xs, x)])


@dataclass(frozen=True)
class SegmentCosts:
    """Measured costs of fused multi-step calls, by length ``L`` (seconds and bytes).

    * ``lengths``: strictly increasing, ``lengths[0] == 1``; ``forward``, ``backward``,
      ``stored_bytes``, ``beta_bytes`` and ``working_bytes`` have one entry per length:
    * ``forward[j]``: one fused call over ``L`` steps with its graph (losses included);
      ``backward[j]``: the backward of that call (one autograd call);
    * ``stored_bytes[j]``: live bytes a stored ``L``-step segment keeps (graph, outputs, loss,
      its input state's storage included); ``beta_bytes[j]``: the same without the input
      state's storage (what it costs when that state is stored anyway);
    * ``working_bytes[j]``: peak live bytes beyond the stored states while an ``L``-step
      segment is the working core (its forward and backward, transients, cursor, incoming
      gradient, parameter-gradient buffers), the largest over chains of linked segments
      backpropagated by one call (as ISM/MSM block plans run their stored segments);
    * ``core_bytes[j]`` (optional, ``None`` when not measured): the same for a *lone* core,
      an ``L``-step segment backpropagated alone, as every chain of an HSM plan is
      (:mod:`membptt.planning.chains`); never more than ``working_bytes`` at that length;
      one entry per length in ``core_lengths`` when given (a denser grid: a chain may have
      any length, and the chain planner's only byte price is this one, so it is measured
      where times are only interpolated), else one per length in ``lengths``;
    * ``run_lengths`` / ``run_seconds``: graph-free fused runs measured at these lengths;
    * ``run_bytes`` (optional, ``None`` when not measured): the peak transient of a graph-free
      run of each ``run_lengths`` length made as *one* fused call (beyond its input state).
      Given, the step takes a planned chunk length (``advance(..., chunk=c)``) and
      ``run_seconds`` are of single calls: a run is priced as the calls it is split into
      (:func:`membptt.planning.prices.run_calls`), at the chunk its plan's memory admits.

    Lists are accepted and stored as tuples (so a model read back from JSON is hashable).
    Values at unmeasured lengths come from :meth:`at` / :meth:`run`: times piecewise-linear
    (:func:`interpolate`), bytes from the next measured length up (:func:`upper`).
    """

    lengths: tuple[int, ...]
    forward: tuple[float, ...]
    backward: tuple[float, ...]
    stored_bytes: tuple[int, ...]
    beta_bytes: tuple[int, ...]
    working_bytes: tuple[int, ...]
    run_lengths: tuple[int, ...]
    run_seconds: tuple[float, ...]
    core_bytes: tuple[int, ...] | None = None
    run_bytes: tuple[int, ...] | None = None
    core_lengths: tuple[int, ...] | None = None

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and f.name in _OPTIONAL_BYTES + ("run_bytes", "core_lengths"):
                continue
            if isinstance(v, list):
                object.__setattr__(self, f.name, v := tuple(v))
            if not isinstance(v, tuple):
                raise ValueError(f"SegmentCosts.{f.name} must be a tuple (or list), "
                                 f"got {type(v).__name__} {v!r}")
        _lengths("SegmentCosts", "lengths", self.lengths)
        if self.lengths[0] != 1:
            raise ValueError("SegmentCosts.lengths must start at 1 (the stepped call), got "
                             f"{self.lengths!r}")
        _lengths("SegmentCosts", "run_lengths", self.run_lengths)
        if self.core_lengths is not None:
            _lengths("SegmentCosts", "core_lengths", self.core_lengths)
            if self.core_bytes is None:
                raise ValueError("SegmentCosts.core_lengths is given but core_bytes is not: "
                                 "core_lengths are the lengths core_bytes was measured at")
            if self.core_lengths[0] != 1 or self.core_lengths[-1] != self.lengths[-1]:
                raise ValueError("SegmentCosts.core_lengths must run from 1 to the longest "
                                 f"length {self.lengths[-1]}, got {self.core_lengths!r}")
        for name in _SEGMENT_TIMES + _SEGMENT_BYTES + _OPTIONAL_BYTES:
            v = getattr(self, name)
            if v is None:
                continue
            grid, gname = self._grid(name)
            if len(v) != len(grid):
                raise ValueError(f"SegmentCosts.{name} has {len(v)} entries; it needs one per "
                                 f"length in {gname}={grid!r} ({len(grid)})")
            for x in v:
                _positive_number("SegmentCosts", name, x)
                if name in _SEGMENT_BYTES + _OPTIONAL_BYTES and not isinstance(x, int):
                    raise ValueError(f"SegmentCosts.{name} must hold integers (bytes), "
                                     f"got {x!r}")
        if self.core_bytes is not None:
            self._not_above("core_bytes", "working_bytes", "a lone core is one of the chains "
                            "working_bytes is the largest of")
        for name in ("run_seconds", "run_bytes"):
            v = getattr(self, name)
            if v is None:
                continue
            if len(v) != len(self.run_lengths):
                raise ValueError(f"SegmentCosts.{name} has {len(v)} entries; it needs one per "
                                 f"run length in {self.run_lengths!r}")
            for x in v:
                _positive_number("SegmentCosts", name, x)
                if name == "run_bytes" and not isinstance(x, int):
                    raise ValueError(f"SegmentCosts.{name} must hold integers (bytes), "
                                     f"got {x!r}")
        self._not_above("beta_bytes", "stored_bytes",
                        "without its input state a segment is not larger")

    def _grid(self, name: str) -> tuple[tuple[int, ...], str]:
        """The lengths ``name`` is measured at, and their field's name."""
        if name == "core_bytes" and self.core_lengths is not None:
            return self.core_lengths, "core_lengths"
        return self.lengths, "lengths"

    def _not_above(self, small: str, big: str, why: str) -> None:
        """Refuse a length where ``small`` exceeds ``big`` (at that length, :meth:`at`),
        naming both values and ``why``."""
        grid, _ = self._grid(small)
        for j, (L, a) in enumerate(zip(grid, getattr(self, small))):
            b = self.at(big, L)
            if a > b:
                raise ValueError(f"SegmentCosts.{small}[{j}] = {a} exceeds {big} = {b:.0f} "
                                 f"at length {L}: {why}")

    def at(self, name: str, length: float) -> float:
        """``name`` (forward, backward, stored_bytes, beta_bytes, working_bytes, core_bytes)
        at ``length`` steps: times interpolated between the measured lengths, bytes taken at
        the next measured length (:func:`upper`; ``core_bytes`` on ``core_lengths`` when
        given); ``core_bytes`` falls back to ``working_bytes`` when it was not measured (an
        upper bound)."""
        valid = _SEGMENT_TIMES + _SEGMENT_BYTES + _OPTIONAL_BYTES
        if name not in valid:
            raise ValueError(f"unknown segment quantity {name!r}; valid: " + ", ".join(valid))
        if name == "core_bytes" and self.core_bytes is None:
            name = "working_bytes"
        if name in _SEGMENT_TIMES:
            return interpolate(self.lengths, getattr(self, name), length)
        return upper(self._grid(name)[0], getattr(self, name), length)

    def run(self, length: int) -> float:
        """Seconds of one graph-free fused run of ``length`` steps (0 for ``length <= 0``)."""
        return 0.0 if length <= 0 else interpolate(self.run_lengths, self.run_seconds, length)

    @property
    def chunked(self) -> bool:
        """Runs are single calls of planned chunk lengths (``run_bytes`` measured)."""
        return self.run_bytes is not None

    def run_transient(self, length: int) -> float:
        """Bytes of one graph-free call of ``length`` steps (next measured length up)."""
        return upper(self.run_lengths, self.run_bytes, length)

    def to_dict(self) -> dict:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None}

MAX_BYTES = 2**63 - 1  # no state is larger than an addressable memory


def _peaks(v) -> tuple:
    """``CostModel.stepped_peaks`` checked: two or more ``(steps, bytes)`` pairs of positive
    ints, steps strictly increasing (JSON lists read back as tuples)."""
    why = ("CostModel.stepped_peaks must be two or more (steps, bytes) pairs of positive ints "
           f"with steps increasing, e.g. ((8, 120000), (32, 410000)); got {v!r}")
    try:
        pairs = tuple((a, b) for a, b in v)
    except (TypeError, ValueError):
        raise ValueError(why) from None
    ok = len(pairs) >= 2 and all(
        not isinstance(x, bool) and isinstance(x, int) and 0 < x <= MAX_BYTES
        for pair in pairs for x in pair)
    if not ok or any(b[0] <= a[0] for a, b in zip(pairs, pairs[1:])):
        raise ValueError(why)
    return pairs


@dataclass(frozen=True)
class CostModel:
    run_fixed: float = 0.0
    run_per_step: float = 1.0
    forward_graph: float = 1.0
    backward: float = 2.0
    hidden_bytes: int | None = None
    internal_bytes: int | None = None
    beta_bytes: int | None = None
    segments: SegmentCosts | None = None
    working_bytes: int | None = None
    # plain stepped BPTT's measured live-bytes peak: ((steps, bytes), ...), lengths increasing
    # (the probe measures it; the base of percentage budgets, budget.stepped_bptt_bytes)
    stepped_peaks: tuple | None = None

    def __post_init__(self):
        if self.stepped_peaks is not None:
            object.__setattr__(self, "stepped_peaks", _peaks(self.stepped_peaks))
        if isinstance(self.segments, dict):  # read back from JSON (CostModel(**json.load(f)))
            try:
                object.__setattr__(self, "segments", SegmentCosts(**self.segments))
            except TypeError as e:
                raise ValueError(f"CostModel.segments: {e}; valid keys: "
                                 + ", ".join(f.name for f in fields(SegmentCosts))) from None
        if self.segments is not None and not isinstance(self.segments, SegmentCosts):
            raise ValueError("CostModel.segments must be a SegmentCosts (or its dict) or None, "
                             f"got {type(self.segments).__name__}")
        for name in ("run_fixed", "run_per_step", "forward_graph", "backward"):
            v = getattr(self, name)
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    or v < 0):
                raise ValueError(f"CostModel.{name} must be a finite number >= 0, got {v!r}")
        if self.run_per_step <= 0 or self.forward_graph <= 0:
            raise ValueError(
                "CostModel.run_per_step and forward_graph must be > 0, got "
                f"{self.run_per_step!r} and {self.forward_graph!r}"
            )
        for name in ("hidden_bytes", "internal_bytes", "beta_bytes", "working_bytes"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0
                                  or v > MAX_BYTES):
                raise ValueError(f"CostModel.{name} must be a positive int of bytes (at most "
                                 f"2**63 - 1) or None, got {v!r}")
        if self.internal_bytes is not None and self.hidden_bytes is None:
            raise ValueError("CostModel.internal_bytes needs hidden_bytes as well")

    # -- time -------------------------------------------------------------------------------
    def run(self, k: int) -> float:
        """Cost of a run of ``k`` graph-free forward steps (0 for ``k == 0``)."""
        return 0.0 if k <= 0 else self.run_fixed + k * self.run_per_step

    @property
    def is_unit(self) -> bool:
        return (self.run_fixed, self.run_per_step, self.forward_graph) == (0.0, 1.0, 1.0)

    def time_key(self) -> tuple:
        """The part of the model the DP depends on (used to memoise tables)."""
        return (float(self.run_fixed), float(self.run_per_step), float(self.forward_graph))

    # -- sizes ------------------------------------------------------------------------------
    @property
    def has_sizes(self) -> bool:
        return self.hidden_bytes is not None and self.internal_bytes is not None

    def alpha_units(self) -> int | None:
        """Internal-state size in hidden-state units, rounded up (None without sizes)."""
        if not self.has_sizes:
            return None
        return max(1, math.ceil(self.internal_bytes / self.hidden_bytes))

    def beta_units(self) -> int | None:
        if not self.has_sizes or self.beta_bytes is None:
            return None
        return max(1, math.ceil(self.beta_bytes / self.hidden_bytes))

    def with_(self, **kw) -> CostModel:
        return replace(self, **kw)

    def to_dict(self) -> dict:
        """JSON-ready fields (``CostModel(**d)`` reads them back, segments included)."""
        d = asdict(self)
        if self.segments is not None:
            d["segments"] = self.segments.to_dict()
        return d


UNIT_COSTS = CostModel()


def costs_and_sizes(costs, alpha, beta):
    """``(costs, alpha, beta)`` as the planners use them: unit costs for ``None`` (anything
    else must be a :class:`CostModel`), and ``alpha``/``beta`` in hidden-state units from the
    cost model's state sizes when not given."""
    costs = UNIT_COSTS if costs is None else costs
    if not isinstance(costs, CostModel):
        raise ValueError(f"costs must be a membptt.CostModel, got {type(costs).__name__}")
    if alpha is None and costs.has_sizes:
        alpha = costs.alpha_units()
        if beta is None and costs.beta_bytes is not None:
            beta = costs.beta_units()
    return costs, alpha, beta


_HEADROOM = 1e300  # planned totals stay below this, far from float overflow (1.8e308)
_RANGE = 1e12  # the largest time field over the smallest positive one


def check_totals(costs: CostModel, seq_len: int) -> None:
    """Refuse a cost model whose planned totals could overflow for ``seq_len`` steps, naming
    the field: every plan runs at most ``T(T+1)/2`` graph-free steps in as many runs, ``T``
    graph forwards and ``T`` backwards, so a total is at most ``T(T+1)/2 (run_fixed +
    run_per_step) + T (forward_graph + backward)``; with segments, ``T`` fused calls of each
    kind and ``T(T+1)/2`` graph-free steps at the longest run's rate. Times are relative (only
    their ratios choose a plan), so huge values can be scaled down."""
    T = float(seq_len)
    tri = T * (T + 1) / 2
    terms = {"CostModel.run_fixed": tri * costs.run_fixed,
             "CostModel.run_per_step": tri * costs.run_per_step,
             "CostModel.forward_graph": T * costs.forward_graph,
             "CostModel.backward": T * costs.backward}
    seg = costs.segments
    if seg is not None:
        for name in ("forward", "backward"):
            vals = getattr(seg, name)
            j = max(range(len(vals)), key=lambda i: vals[i] / seg.lengths[i])
            terms[f"SegmentCosts.{name}[{j}]"] = T * vals[j] / seg.lengths[j] * 2
        j = max(range(len(seg.run_seconds)), key=lambda i: seg.run_seconds[i])
        terms[f"SegmentCosts.run_seconds[{j}]"] = tri * seg.run_seconds[j]
    # the per-step prices every plan pays T times or more (a launch cost may be anything
    # from 0 up: one that is lost beside them changes no total noticeably)
    times = {n: getattr(costs, n) for n in ("run_per_step", "forward_graph", "backward")
             if getattr(costs, n) > 0}
    hi, lo = max(times, key=times.get), min(times, key=times.get)
    if times[hi] > _RANGE * times[lo]:  # sums in float64 would lose the smaller one
        raise ValueError(
            f"CostModel.{hi} = {times[hi]!r} is more than {_RANGE:.0e} times CostModel.{lo} = "
            f"{times[lo]!r}: the planner adds them in float64, where the smaller would be lost "
            "and plans would tie; give costs within that range (measured times are)")
    if sum(terms.values()) <= _HEADROOM:
        return
    name = max(terms, key=terms.get)
    owner, field = name.split(".", 1)
    value = (getattr(costs, field) if owner == "CostModel"
             else getattr(seg, field.split("[")[0])[int(field.split("[")[1][:-1])])
    raise ValueError(
        f"{name} = {value!r} makes planned costs overflow for seq_len={seq_len} (a plan's "
        f"total could reach about {sum(terms.values()):.3g}, above {_HEADROOM:.0e}): costs "
        "are relative, so scale them down (e.g. seconds instead of nanoseconds)")
