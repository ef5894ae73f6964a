"""membptt: memory-efficient backpropagation through time (Gruslys et al., NeurIPS 2016).

Planning (no torch needed)::

    p = membptt.plan("msm", seq_len=1000, memory=250, alpha=5)
    membptt.simulate(p)

Execution (torch)::

    costs = membptt.probe(step, state0, inputs)
    p = membptt.plan("msm", seq_len=T, memory="5%", costs=costs)
    loss = membptt.bptt(step, state0, inputs, p); loss.backward()
"""

from .planning import (
    STRATEGIES,
    UNIT_COSTS,
    Backward,
    BlockPlan,
    BudgetTooSmall,
    ChainPlan,
    CostModel,
    Drop,
    Forward,
    MinimumBudget,
    Plan,
    PlanError,
    PlanTooLarge,
    SegmentCosts,
    SimResult,
    min_memory,
    paper_trace,
    plan,
    register,
    simulate,
)

__version__ = "0.1.0"

_LAZY = {"bptt": "execution", "probe": "execution", "models": None, "wrap": "execution", "scan": "execution",
         "tune": "execution"}


def __getattr__(name):  # torch-dependent parts load on first use
    if name in _LAZY:
        import importlib

        if _LAZY[name] is None:
            return importlib.import_module(f".{name}", __name__)
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'membptt' has no attribute {name!r}")


def __dir__():  # list the lazily loaded names too (tab completion, dir(membptt))
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "STRATEGIES", "UNIT_COSTS", "Backward", "BlockPlan", "BudgetTooSmall", "ChainPlan", "CostModel",
    "Drop",
    "Forward", "MinimumBudget", "Plan", "PlanError", "PlanTooLarge", "SegmentCosts", "SimResult",
    "bptt", "min_memory", "paper_trace", "plan", "probe", "register", "simulate", "models", "wrap", "scan",
    "tune",
]
