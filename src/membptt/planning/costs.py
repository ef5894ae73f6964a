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
input hidden state is already stored (PAPER.md's beta form). The planners count memory in
*hidden-state units*; ``alpha`` and ``beta`` in units are the byte ratios rounded up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

MAX_BYTES = 2**63 - 1  # no state is larger than an addressable memory


@dataclass(frozen=True)
class CostModel:
    run_fixed: float = 0.0
    run_per_step: float = 1.0
    forward_graph: float = 1.0
    backward: float = 2.0
    hidden_bytes: int | None = None
    internal_bytes: int | None = None
    beta_bytes: int | None = None

    def __post_init__(self):
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
        for name in ("hidden_bytes", "internal_bytes", "beta_bytes"):
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
        return asdict(self)


UNIT_COSTS = CostModel()
