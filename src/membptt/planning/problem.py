"""What a planner is asked: one :class:`Problem` per :func:`membptt.plan` call, with the budget
resolved once (:mod:`.budget`) and the size limits checked (:mod:`.limits`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .budget import BudgetRequest
from .costs import CostModel
from .strategies import Strategy


@dataclass(frozen=True)
class Problem:
    strategy: Strategy
    seq_len: int
    req: BudgetRequest | None  # None: no budget given
    alpha: int | None
    beta: int | None
    costs: CostModel
    options: dict = field(default_factory=dict)
    block: int | None = None  # a fixed block length (block planner only)
    max_table_bytes: int = 0
    max_ops: int = 0
    max_dp_work: int = 0

    @property
    def name(self) -> str:
        return self.strategy.name

    @property
    def ci(self) -> bool:
        return self.strategy.count_initial


@dataclass(frozen=True)
class MinimumBudget:
    """The smallest feasible budget: ``units`` (hidden-state units, the paper's accounting;
    None where the planner counts bytes only) and ``bytes`` (the smallest byte budget that
    plans, working set included when known; None without state sizes); ``planner`` and
    ``block`` say where it was found (``block``: the block length of a block plan)."""

    strategy: str
    seq_len: int
    units: int | None
    bytes: int | None
    block: int | None = None
    planner: str = "steps"
