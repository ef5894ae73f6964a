"""Planning: the plan format, exact DP policies, baselines and the simulator (no torch)."""

from . import dp, limits
from .blocks import BlockPlan
from .budget import Budget
from .chains import ChainPlan
from .costs import UNIT_COSTS, CostModel, SegmentCosts
from .limits import PlanTooLarge
from .ops import Backward, Drop, Forward, format_ops, paper_trace, parse_ops
from .peak import MinimumBudget, min_memory
from .plan import Plan, plan
from .simulate import BudgetTooSmall, PlanError, SimResult, simulate, simulate_ops
from .strategies import STRATEGIES, Request, register

__all__ = [
    "Backward", "BlockPlan", "Budget", "BudgetTooSmall", "ChainPlan", "CostModel", "Drop", "Forward",
    "MinimumBudget", "Plan", "PlanError", "PlanTooLarge", "Request", "STRATEGIES",
    "SegmentCosts", "SimResult", "UNIT_COSTS", "dp", "format_ops", "limits", "min_memory",
    "paper_trace", "parse_ops", "plan", "register", "simulate", "simulate_ops",
]
