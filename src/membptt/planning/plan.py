"""The plan type: one :class:`Plan` for every planner (steps, blocks, chains).

A plan is data: step-level ops (:mod:`.ops`) that the simulator validated (``sim``, the
paper's unit accounting), the segment ends the executor runs fused calls between
(``segment_ends``, None for stepped execution), and the prediction of :func:`.replay.predict`
under the plan's own cost model (``prediction``), which is where every predicted time and
byte count of a plan comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .budget import Budget
from .costs import CostModel
from .ops import format_ops, paper_trace
from .replay import Prediction, SimResult, predict, simulate_ops

PLANNERS = ("steps", "blocks", "chains")


@dataclass(frozen=True)
class Plan:
    """A compiled, validated plan: the ops plus what the replays say of them.

    ``planner``: ``"steps"`` (the paper's DP on single steps, or a baseline), ``"blocks"``
    (the DP on blocks of ``block`` steps, :mod:`.blocks`) or ``"chains"`` (HSM with fused
    chains of any length, :mod:`.chains`). ``segment_ends``: the last step of every fused
    segment the executor runs (a segment never crosses one); None for stepped execution.
    ``units``: the peak in hidden-state units in the planner's own accounting (the DP's
    budget is in these; a block plan's core block and a chain are the working core, free as
    the paper's core is); ``sim.peak_units`` is the step-level count.
    ``block_ops``: the block-level ops of a block plan; ``chains``: ``(first, last)`` of
    every chain of a chain plan.
    """

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
    planner: str = "steps"
    block: int | None = None
    segment_ends: tuple | None = None
    prediction: Prediction | None = None
    units: float | None = None
    block_ops: tuple = ()
    chains: tuple = ()

    def __post_init__(self):
        if self.prediction is None:
            object.__setattr__(self, "prediction", self.predict())

    def predict(self, costs: CostModel | None = None) -> Prediction:
        """This plan priced as the executor runs it (:func:`.replay.predict`) under ``costs``
        (default: its own)."""
        return predict(self.ops, self.seq_len, costs or self.costs, alpha=self.alpha,
                       beta=self.beta, segment_ends=self.segment_ends)

    # counts and predictions --------------------------------------------------------------------
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
        """Peak memory in hidden-state units (the planner's accounting, see the class)."""
        return self.sim.peak_units if self.units is None else self.units

    @property
    def peak_bytes(self) -> int | None:
        """Predicted peak bytes of the stored states beyond h_0 (None without sizes)."""
        return self.prediction.stored_peak_bytes

    @property
    def predicted_peak_bytes(self) -> int | None:
        """Stored states plus the working set of the call running then, at its largest: the
        live bytes an iteration is predicted to hold beyond inputs, parameters and h_0; None
        when no working set is known."""
        return self.prediction.peak_bytes

    @property
    def forward_cost(self) -> float:
        return self.prediction.forward_cost

    @property
    def predicted_cost(self) -> float:
        """Predicted time of an iteration under ``self.costs`` (forward plus backward)."""
        return self.prediction.total_cost

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
            "planner": self.planner,
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
            "segments": None if self.segment_ends is None else len(self.segment_ends),
            "predicted_peak_bytes": self.predicted_peak_bytes,
            "costs": self.costs.to_dict(),
            "info": self.info,
        }
        if with_ops:
            d["ops"] = self.ops_text()
        return d

    @property
    def shape(self) -> str:
        """What the planner built, in words: ``"blocks of 16"``, ``"69 chains of 11-18
        steps"`` or ``"single steps"``."""
        if self.chains:
            lens = [b - a + 1 for a, b in self.chains]
            return f"{len(lens)} chains of {min(lens)}-{max(lens)} steps"
        return f"blocks of {self.block}" if self.planner == "blocks" else "single steps"

    def __str__(self) -> str:
        mem = "" if self.budget is None else f", budget {self.budget.units} units"
        how = "" if self.planner == "steps" and not self.chains else f", {self.shape}"
        return (f"Plan({self.strategy}, T={self.seq_len}{mem}: {self.forward_ops} forwards, "
                f"{self.backward_ops} backwards, peak {self.peak_memory} units"
                + (f" / {self.peak_bytes} B" if self.peak_bytes is not None else "") + how + ")")


# Kept names: block and chain plans are Plans (``plan.planner`` says which).
BlockPlan = Plan
ChainPlan = Plan


def simulate(plan, costs: CostModel | None = None) -> SimResult:
    """Replay a :class:`Plan` (optionally under other costs / sizes)."""
    if not isinstance(plan, Plan):
        raise ValueError(f"simulate() needs a membptt.Plan (from membptt.plan(...)), got "
                         f"{type(plan).__name__}; to replay a list of ops use "
                         "membptt.planning.simulate_ops(ops, seq_len, ...)")
    if costs is not None and not isinstance(costs, CostModel):
        raise ValueError(f"costs must be a membptt.CostModel or None, got "
                         f"{type(costs).__name__}")
    return simulate_ops(plan.ops, plan.seq_len, alpha=plan.alpha or 1, beta=plan.beta,
                        count_initial=plan.count_initial, costs=costs or plan.costs)
