"""``membptt.plan``: one entry point for every strategy, returning a simulated :class:`Plan`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import limits
from . import strategies as S
from .budget import VALID_FORMS, Budget, resolve
from .costs import CostModel, costs_and_sizes
from .ops import format_ops, paper_trace
from .simulate import BudgetTooSmall, SimResult, simulate_ops


@dataclass(frozen=True)
class Plan:
    """A compiled, validated plan: the ops plus what the simulator measured of them."""

    strategy: str
    seq_len: int
    ops: tuple
    alpha: int | None
    beta: int | None
    count_initial: bool
    costs: CostModel
    budget: Budget | None
    sim: SimResult
    info: dict = field(default_factory=dict)

    # counts and predictions (from the simulator) -------------------------------------------
    @property
    def forward_ops(self) -> int:
        return self.sim.forward_ops

    @property
    def backward_ops(self) -> int:
        return self.sim.backward_ops

    @property
    def graph_forwards(self) -> int:
        return self.sim.graph_forwards

    @property
    def peak_memory(self):
        """Peak memory in hidden-state units (the paper's accounting for this strategy)."""
        return self.sim.peak_units

    @property
    def peak_bytes(self) -> int | None:
        """Predicted peak bytes held by the plan beyond h_0 (None without state sizes)."""
        return self.sim.peak_bytes

    @property
    def block(self) -> int | None:
        """Block length ``k`` of a block plan (:mod:`.blocks`); None for step-level plans."""
        return None

    @property
    def predicted_peak_bytes(self) -> int | None:
        """Stored peak bytes plus the working set (``costs.working_bytes``): the live bytes an
        iteration is predicted to hold beyond inputs, parameters and h_0; None when either is
        unknown."""
        if self.sim.peak_bytes is None or self.costs.working_bytes is None:
            return None
        return self.sim.peak_bytes + self.costs.working_bytes

    @property
    def forward_cost(self) -> float:
        return self.sim.forward_cost

    @property
    def predicted_cost(self) -> float:
        """Forward cost plus ``seq_len * costs.backward`` under ``self.costs``."""
        return self.sim.predicted_cost

    @property
    def cost_per_step(self) -> float:
        """The paper's C/t: forward operations per step."""
        return self.forward_ops / self.seq_len

    @property
    def memory(self) -> int | None:
        return self.budget.units if self.budget else None

    def trace(self) -> str:
        """Execution order in the style of the paper's Fig. 3."""
        return paper_trace(self.ops)

    def ops_text(self) -> str:
        return format_ops(self.ops)

    def to_dict(self, with_ops: bool = False) -> dict:
        d = {
            "strategy": self.strategy,
            "seq_len": self.seq_len,
            "memory": self.memory,
            "alpha": self.alpha,
            "beta": self.beta,
            "budget": self.budget.to_dict() if self.budget else None,
            "forward_ops": self.forward_ops,
            "backward_ops": self.backward_ops,
            "graph_forwards": self.graph_forwards,
            "peak_memory": self.peak_memory,
            "peak_bytes": self.peak_bytes,
            "cost_per_step": self.cost_per_step,
            "forward_cost": self.forward_cost,
            "predicted_cost": self.predicted_cost,
            "counts_initial_state": self.count_initial,
            "block": self.block,
            "predicted_peak_bytes": self.predicted_peak_bytes,
            "costs": self.costs.to_dict(),
            "info": self.info,
        }
        if with_ops:
            d["ops"] = self.ops_text()
        return d

    def __str__(self) -> str:
        mem = "" if self.budget is None else f", budget {self.budget.units} units"
        return (f"Plan({self.strategy}, T={self.seq_len}{mem}: {self.forward_ops} forwards, "
                f"{self.backward_ops} backwards, peak {self.peak_memory} units"
                + (f" / {self.peak_bytes} B" if self.peak_bytes is not None else "") + ")")


def _int_param(name: str, value, *, allow_none: bool, minimum: int = 1):
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(math.ceil(value))  # real size ratios are rounded up (PAPER.md section 1)


_KEYWORDS = ("memory", "alpha", "beta", "costs", "max_table_bytes", "max_ops", "max_dp_work")


def plan(strategy: str, seq_len: int, memory=None, *, alpha=None, beta=None,
         costs: CostModel | None = None, block="default", percent_of: str = "stepped",
         max_table_bytes: int | None = None, max_ops: int | None = None,
         max_dp_work: int | None = None, **options) -> Plan:
    """Compile a plan for ``seq_len`` steps under a memory budget.

    Args:
        strategy: a registered name (``membptt.STRATEGIES``): full, hsm, ism, msm, chen,
            chen-recursive, recompute-all, ...
        seq_len: number of time steps T >= 1.
        memory: budget in hidden-state units (int), bytes (``"512MiB"``) or a fraction of the
            full-cache memory (``"5%"``); optional for full, chen, chen-recursive and
            recompute-all. See :mod:`membptt.planning.budget`.
        alpha: internal-state size in hidden-state units (>= 1; real ratios are rounded up).
            Defaults to the ratio of ``costs``' sizes when it has them.
        beta: size of an internal state whose input state is stored (1 <= beta <= alpha);
            None disables the beta form.
        costs: a :class:`CostModel` (``membptt.probe`` measures one); defaults to unit costs,
            under which the DP strategies reproduce the paper's ``C(t, m)``.
        block: ``"default"`` (``"auto"`` when ``costs.segments`` is set and the strategy is
            hsm, ism or msm, else step level), ``None`` (step level, the paper's DP), ``"auto"``
            (choose the block length) or an int ``k``: plan on blocks of ``k`` steps priced as
            fused calls (:mod:`membptt.planning.blocks`; returns a ``BlockPlan``);
            ``"chains"`` (hsm only): plan on steps with fused chains of any length priced by
            their measured length (:mod:`membptt.planning.chains`; returns a ``ChainPlan``).
        percent_of: what a percentage budget is of: ``"stepped"`` BPTT's bytes (default) or
            ``"fused"`` BPTT's (needs ``costs.segments``); see :mod:`membptt.planning.peak`.
            When ``costs.working_bytes`` (or segments) is set, byte and percentage budgets
            bound stored states plus the working set.
        max_table_bytes, max_ops, max_dp_work: size limits (None: the defaults of
            :mod:`membptt.planning.limits`: 256 MiB of DP tables, 2^20 ops, 4 x 10^8 units of
            DP work); a plan above the first two is refused with
            :class:`~membptt.planning.limits.PlanTooLarge` before the memory is allocated, a DP
            above the third when it reaches it (seconds), saying what it would need.
        **options: the strategy's own options (``Strategy.options``: ``segments`` for chen,
            ``branching`` for chen-recursive); any other keyword is refused.

    Raises ValueError naming the bad value and what is valid; :class:`BudgetTooSmall` (a
    ValueError) for a budget below the strategy's minimum.
    """
    strat = S.get(strategy)
    unknown = sorted(set(options) - set(strat.options))
    if unknown:
        raise ValueError(f"plan() got unknown keyword argument(s) {', '.join(unknown)} for "
                         f"strategy {strategy!r}; valid: "
                         + ", ".join((*_KEYWORDS, *strat.options)))
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be an integer >= 1, got {seq_len!r}")
    max_table_bytes = limits.max_table_bytes(max_table_bytes)
    max_ops = limits.max_ops(max_ops)
    max_dp_work = limits.max_dp_work(max_dp_work)
    # every plan holds a forward and a backward per step: refuse hopeless lengths at once
    limits.check_ops(2 * seq_len, max_ops, strategy=strategy, seq_len=seq_len, exact=False)
    costs, alpha, beta = costs_and_sizes(costs, alpha, beta)
    alpha = _int_param("alpha", alpha, allow_none=True)
    beta = _int_param("beta", beta, allow_none=True)
    if beta is not None:
        if alpha is None:
            raise ValueError(f"beta={beta} needs alpha as well")
        if beta > alpha:
            raise ValueError(f"beta must be <= alpha (a stored input makes an internal state "
                             f"smaller, not larger), got beta={beta} > alpha={alpha}")
    from . import blocks, peak

    peak.check_percent_of(percent_of)
    block = blocks.block_arg(block, strategy, costs)
    if block == "chains":
        from .chains import plan_chains

        return plan_chains(strategy, seq_len, memory, alpha=alpha, beta=beta, costs=costs,
                           percent_of=percent_of, options=dict(options),
                           max_table_bytes=max_table_bytes, max_ops=max_ops,
                           max_dp_work=max_dp_work)
    if block is not None:
        return blocks.plan_blocks(strategy, seq_len, memory, alpha=alpha, beta=beta, costs=costs,
                                  block=block, percent_of=percent_of, options=dict(options),
                                  max_table_bytes=max_table_bytes, max_ops=max_ops,
                                  max_dp_work=max_dp_work)
    needs_alpha = strat.needs_alpha or (isinstance(memory, str) and memory.strip().endswith("%")
                                        and not costs.has_sizes)
    if alpha is None and needs_alpha:
        raise ValueError(f"strategy {strategy!r} needs alpha (internal-state size in "
                         "hidden-state units): pass alpha=... or costs with state sizes")
    budget = None
    units = None
    if memory is None:
        if strat.needs_memory:
            raise ValueError(f"strategy {strategy!r} needs a memory budget ({VALID_FORMS})")
    else:
        budget = peak.step_budget_with_working_set(
            memory, seq_len=seq_len, costs=costs, count_initial=strat.count_initial,
            percent_of=percent_of) or resolve(
            memory, seq_len=seq_len, alpha=alpha, hidden_bytes=costs.hidden_bytes,
            internal_bytes=costs.internal_bytes, count_initial=strat.count_initial)
        units = budget.units
        minimum = strat.min_memory(seq_len, alpha, beta)
        if units < minimum:
            raise BudgetTooSmall(
                f"memory budget {memory!r} ({units} units) is below the minimum of strategy "
                f"{strategy!r} for seq_len={seq_len}"
                + (f", alpha={alpha}" if alpha is not None else "")
                + (f", beta={beta}" if beta is not None else "")
                + f": {minimum} units",
                requested=memory, minimum=minimum, strategy=strategy, seq_len=seq_len,
                minimum_bytes=None if not costs.hidden_bytes else  # as membptt.min_memory
                (minimum - strat.count_initial) * costs.hidden_bytes + (costs.working_bytes or 0))
    req = S.Request(seq_len, units, alpha, beta, costs, dict(options), max_table_bytes,
                    max_ops, max_dp_work)
    ops, info = strat.build(req)
    limits.check_ops(len(ops), max_ops, strategy=strategy, seq_len=seq_len)  # the exact count
    sim = simulate_ops(ops, seq_len, alpha=alpha or 1, beta=beta,
                       count_initial=strat.count_initial, costs=costs)
    if units is not None and sim.peak_units > units:  # a planner bug, never a user error
        raise AssertionError(f"{strategy} plan exceeds its budget: {sim.peak_units} > {units}")
    return Plan(strategy, seq_len, tuple(ops), alpha, beta, strat.count_initial, costs, budget,
                sim, info)

