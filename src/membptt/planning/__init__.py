"""Planning: the plan format, exact DP policies, baselines, the planners and the replays (no torch).

Layout (each module imports only modules above it; ``tests/test_planning_layout.py`` checks):

    errors      PlanError, BudgetTooSmall, PlanTooLarge
    ops         the plan format
    costs       CostModel, SegmentCosts
    limits      size limits of planning
    prices      times and sizes of fused calls by length
    budget      budget forms, references of percentages, the bytes -> units rule
    replay      simulate_ops (validation, the paper's accounting), predict (what runs)
    plan        the Plan type, simulate(plan)
    dp          the exact DP engine (+ the compiled core _dpcore.c)
    strategies  the registry: each strategy and the planners that apply to it
    problem     what a planner is asked (Problem, MinimumBudget)
    steps, blocks, chains   the three planners
    api         plan(), plans(), min_memory(): the front door
"""

from . import dp, limits
from .api import PLANNER_CHOICES, min_memory, plan, plans
from .budget import Budget
from .costs import UNIT_COSTS, CostModel, SegmentCosts
from .errors import BudgetTooSmall, PlanError, PlanTooLarge
from .ops import Backward, Drop, Forward, format_ops, paper_trace, parse_ops
from .plan import PLANNERS, BlockPlan, ChainPlan, Plan, simulate
from .prices import Prices
from .problem import MinimumBudget
from .replay import Prediction, SimResult, predict, simulate_ops
from .strategies import STRATEGIES, Request, register

__all__ = [
    "Backward", "BlockPlan", "Budget", "BudgetTooSmall", "ChainPlan", "CostModel", "Drop", "Forward",
    "MinimumBudget", "PLANNERS", "PLANNER_CHOICES", "Plan", "PlanError", "PlanTooLarge",
    "Prediction", "Prices", "Request", "STRATEGIES", "SegmentCosts", "SimResult", "UNIT_COSTS",
    "dp", "format_ops", "limits", "min_memory", "paper_trace", "parse_ops", "plan", "plans", "predict",
    "register", "simulate", "simulate_ops",
]
