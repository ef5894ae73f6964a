"""Prices of fused calls by length: the times and sizes every planner and the replay read.

Measured (``costs.segments``, :class:`~membptt.planning.costs.SegmentCosts`, interpolated
between the measured lengths) or, without segments, ``L`` times the step model: forward
``L * forward_graph``, backward ``L * backward``, a stored ``L``-step segment ``internal_bytes
+ (L - 1) beta_bytes`` (its steps' inputs are held by the segment itself, the paper's beta
form). A graph-free run of ``L`` steps is ``segments.run(L)`` or ``CostModel.run(L)``; where
the probe measured single calls' transients (``segments.run_bytes``, a step that takes a planned
chunk length) it is the calls it is split into, :func:`run_calls`, at the longest call the plan's
memory admits (:meth:`Prices.cap_for`; the planners' tables use the cap every plan admits,
:meth:`Prices.floor_cap`, and the replay the plan's own).
"""

from __future__ import annotations

import math

from .costs import CostModel


def run_chunk(length: int, cap: int) -> int:
    """Steps per call of a graph-free run of ``length`` steps whose calls may be at most
    ``cap`` steps: the fewest calls, made as even as a fixed chunk makes them
    (``ceil(length / ceil(length / cap))``; 250 steps at a cap of 200: two calls of 125)."""
    n = -(-length // max(1, cap))
    return -(-length // n)


def run_calls(length: int, cap: int) -> list[int]:
    """The call lengths of a graph-free run of ``length`` steps at call cap ``cap``, as
    ``advance(..., chunk=run_chunk(length, cap))`` makes them (calls of the chunk, then the
    rest)."""
    if length <= 0:
        return []
    c = run_chunk(length, cap)
    q, r = divmod(length, c)
    return [c] * q + ([r] if r else [])


class Prices:
    """Times and sizes of fused calls by length: measured (``costs.segments``) or ``L`` times
    the step model. Bytes are rounded up to integers; units are hidden-state units.

    ``stepped=True`` prices stepped execution as the step-level DP does: every call one step
    of the stepped cell and graph-free runs ``run_fixed + L * run_per_step``, from the step
    model where the cost model has its sizes (else the segments' values stand in)."""

    def __init__(self, costs: CostModel, alpha: int | None, beta: int | None, *,
                 stepped: bool = False):
        self.costs, self.seg, self.hb = costs, costs.segments, costs.hidden_bytes
        self._runs = self.seg
        if stepped and costs.has_sizes:
            self.seg = self._runs = None
        if self.seg is not None and self.hb is None:
            raise ValueError("block planning on costs.segments needs CostModel.hidden_bytes "
                             "(to count segment bytes in hidden-state units)")
        self.sized = self.seg is not None or costs.has_sizes
        self.alpha = alpha or 1
        self.beta = self.alpha if beta is None else beta
        ib = costs.internal_bytes
        self._ib, self._bb = ib, costs.beta_bytes if costs.beta_bytes is not None else ib
        # planned chunk lengths of graph-free runs (priced at a call cap, default the floor's)
        self.chunked = self._runs is not None and self._runs.chunked
        self._floor = None

    @property
    def source(self) -> str:
        return "segments" if self.seg is not None else "steps"

    def forward(self, L: int) -> float:
        return self.seg.at("forward", L) if self.seg else L * self.costs.forward_graph

    def backward(self, L: int) -> float:
        return self.seg.at("backward", L) if self.seg else L * self.costs.backward

    def run(self, L: int, cap: int | None = None) -> float:
        """A graph-free run of ``L`` steps: at call cap ``cap`` (default :meth:`floor_cap`)
        where calls are planned, else as the probe timed it."""
        if not self._runs:
            return self.costs.run(L)
        if not self.chunked:
            return self._runs.run(L)
        cap = cap or self.floor_cap()
        return sum(self._runs.run(n) for n in run_calls(L, cap))

    def cap_for(self, allowance: float) -> int:
        """The longest graph-free call whose measured transient is at most ``allowance``
        bytes (bytes at an unmeasured length: the next measured length's; beyond the longest,
        its per-step rate); 1 when none is."""
        seg = self._runs
        xs, ys = seg.run_lengths, seg.run_bytes
        best, hi = 1, 0
        for L, b in zip(xs, ys):
            hi = max(hi, b)
            if hi > allowance:
                return best
            best = L
        return max(best, int(allowance * xs[-1] // ys[-1]))

    def floor_cap(self) -> int:
        """The call cap every plan admits: what the least working set of any core leaves
        beside a cursor and an incoming gradient (a run never holds more beside the stored
        states, :func:`membptt.planning.replay.predict`)."""
        if self._floor is None:
            seg = self.seg or self._runs
            least = min(seg.core_bytes or seg.working_bytes)
            self._floor = self.cap_for(least - 2 * (self.hb or 0))
        return self._floor

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
