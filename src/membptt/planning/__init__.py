"""Planning: the plan format, exact DP policies, baselines and the simulator (no torch)."""

from . import dp, limits
from .budget import Budget
from .costs import UNIT_COSTS, CostModel
from .limits import PlanTooLarge
from .ops import Backward, Drop, Forward, format_ops, paper_trace, parse_ops
from .plan import Plan, plan
from .simulate import PlanError, SimResult, simulate, simulate_ops
from .strategies import STRATEGIES, Request, register

__all__ = [
    "Backward", "Budget", "CostModel", "Drop", "Forward", "Plan", "PlanError", "PlanTooLarge", "Request",
    "STRATEGIES", "SimResult", "UNIT_COSTS", "dp", "format_ops", "limits", "paper_trace", "parse_ops",
    "plan", "register", "simulate", "simulate_ops",
]
