"""The planning errors (all ``ValueError``): an invalid plan, a budget below the minimum, a plan
or DP above a size limit. Every module of :mod:`membptt.planning` may import this one; it
imports nothing of the package."""

from __future__ import annotations


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


class PlanTooLarge(ValueError):
    """A plan or its DP tables would exceed a size limit; the message says what it needs.

    ``limit`` names the limit when one raised it: ``"table"`` (DP table bytes), ``"work"``
    (DP work units), ``"ops"`` (plan length); None otherwise."""

    def __init__(self, message: str, *, limit: str | None = None):
        super().__init__(message)
        self.limit = limit
