"""``membptt.plan`` and ``membptt.min_memory``: one front door for every strategy and planner.

The library picks the planner: ``planner="auto"`` (the default) plans at step level when the
cost model has no fused segment measurements (and, for a measured step with a byte budget, on
blocks of the step model when the step DP is past a table or work limit,
:mod:`membptt.planning.limits`: the refusal is kept in ``plan.info["planners"]``), and
otherwise tries every planner the
strategy's registry entry declares (``Strategy.planners``: steps, blocks, chains) and keeps
the plan with the least predicted time under the plan's cost model (ties: smaller predicted
peak, then the order steps, blocks, chains). Every candidate's prediction, or why it was not
possible, is in ``plan.info["planners"]``; ``plan.planner`` says which one was kept.
"""

from __future__ import annotations

import math

from . import blocks, chains, limits, steps
from . import strategies as S
from .budget import check_percent_of, parse_memory, request, too_small
from .costs import CostModel, check_totals, costs_and_sizes
from .errors import BudgetTooSmall, PlanTooLarge
from .plan import PLANNERS, Plan
from .problem import MinimumBudget, Problem

_MODULES = {"steps": steps, "blocks": blocks, "chains": chains}
PLANNER_CHOICES = ("auto", *PLANNERS)
_KEYWORDS = ("memory", "planner", "block", "alpha", "beta", "costs", "percent_of",
             "max_table_bytes", "max_ops", "max_dp_work")
_OLD_BLOCK = {"auto": "planner='blocks' (the block length is chosen when block is not given)",
              "chains": "planner='chains'", "default": "planner='auto' (the default)"}


def _int_param(name: str, value, *, minimum: int = 1):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(math.ceil(value))  # real size ratios are rounded up (the paper's alpha and beta are integers)


def _check_seq_len(seq_len) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be an integer >= 1, got {seq_len!r}")
    return seq_len


def _sizes(costs, alpha, beta):
    costs, alpha, beta = costs_and_sizes(costs, alpha, beta)
    alpha = _int_param("alpha", alpha)
    beta = _int_param("beta", beta)
    if beta is not None:
        if alpha is None:
            raise ValueError(f"beta={beta} needs alpha as well")
        if beta > alpha:
            raise ValueError(f"beta must be <= alpha (a stored input makes an internal state "
                             f"smaller, not larger), got beta={beta} > alpha={alpha}")
    return costs, alpha, beta


def _planners(strat: S.Strategy, costs: CostModel, planner, block) -> list[str]:
    """The planners to try, checked against the strategy's registry entry."""
    if isinstance(block, str) and block in _OLD_BLOCK:
        raise ValueError(f"block={block!r} is no longer a planner choice: use "
                         f"{_OLD_BLOCK[block]}; block is a block length only")
    if block is not None and (isinstance(block, bool) or not isinstance(block, int)
                              or block < 1):
        raise ValueError(f"block must be None or an integer block length k >= 1; got {block!r}")
    if planner not in PLANNER_CHOICES:
        raise ValueError(f"planner must be one of {', '.join(map(repr, PLANNER_CHOICES))}; "
                         f"got {planner!r}")
    if block is not None:
        if planner not in ("auto", "blocks"):
            raise ValueError(f"block={block} is a block length of the block planner; it does "
                             f"not go with planner={planner!r}")
        planner = "blocks"
    if planner == "auto":
        if costs.segments is None:
            return ["steps"]
        return [p for p in PLANNERS if p in strat.planners]
    if planner not in strat.planners:
        raise ValueError(f"planner {planner!r} does not apply to strategy {strat.name!r}; its "
                         f"planners: {', '.join(strat.planners)}"
                         + (" (the chain planner is BPTT-HSM with fused chains)"
                            if planner == "chains" else ""))
    return [planner]


def check_planner(strategy: str, planner: str = "auto", block=None) -> None:
    """Refuse, as :func:`plan` would, a ``planner`` / ``block`` that does not apply to
    ``strategy`` (for checking options before anything is built)."""
    _planners(S.get(strategy), CostModel(), planner, block)


def _problem(strategy, seq_len, *, alpha, beta, costs, options, block, max_table_bytes,
             max_ops, max_dp_work):
    strat = S.get(strategy)
    unknown = sorted(set(options) - set(strat.options))
    if unknown:
        raise ValueError(f"plan() got unknown keyword argument(s) {', '.join(unknown)} for "
                         f"strategy {strategy!r}; valid: "
                         + ", ".join((*_KEYWORDS, *strat.options)))
    seq_len = _check_seq_len(seq_len)
    max_table_bytes = limits.max_table_bytes(max_table_bytes)
    max_ops = limits.max_ops(max_ops)
    max_dp_work = limits.max_dp_work(max_dp_work)
    costs, alpha, beta = _sizes(costs, alpha, beta)
    check_totals(costs, seq_len)
    return Problem(strat, seq_len, None, alpha, beta, costs, dict(options), block,
                   max_table_bytes, max_ops, max_dp_work)


def _minimum(pb: Problem, names: list[str]) -> MinimumBudget:
    """The least budget over the planners ``names`` (bytes when known, else units)."""
    found = []
    for name in names:
        try:
            found.append(_MODULES[name].minimum(pb))
        except ValueError:  # this planner does not apply to these costs
            if len(names) == 1:
                raise
    units = [m for m in found if m.units is not None]
    sized = [m for m in found if m.bytes is not None]
    best = min(sized, key=lambda m: m.bytes) if sized else min(units, key=lambda m: m.units)
    least_units = min((m.units for m in units), default=None)
    return MinimumBudget(pb.name, pb.seq_len, least_units, best.bytes, best.block,
                         best.planner)


def min_memory(strategy: str, seq_len: int, *, alpha=None, beta=None,
               costs: CostModel | None = None, planner: str = "auto", block=None,
               **options) -> MinimumBudget:
    """The smallest budget ``membptt.plan(strategy, seq_len, ...)`` accepts with these
    arguments (same meaning as in :func:`plan`): ``bytes`` is the least byte budget that plans
    (one byte less raises :class:`BudgetTooSmall`), ``units`` the least unit budget (None
    where only bytes price the planner, the chain planner); for ``planner="auto"`` the least
    over the planners tried."""
    pb = _problem(strategy, seq_len, alpha=alpha, beta=beta, costs=costs, options=options,
                  block=block, max_table_bytes=None, max_ops=None, max_dp_work=None)
    return _minimum(pb, _planners(pb.strategy, pb.costs, planner, block))


def plan(strategy: str, seq_len: int, memory=None, *, planner: str = "auto", block=None,
         alpha=None, beta=None, costs: CostModel | None = None, percent_of: str = "stepped",
         max_table_bytes: int | None = None, max_ops: int | None = None,
         max_dp_work: int | None = None, **options) -> Plan:
    """Compile a plan for ``seq_len`` steps under a memory budget.

    Args:
        strategy: a registered name (``membptt.STRATEGIES``): full, hsm, ism, msm, chen,
            chen-recursive, recompute-all, ...
        seq_len: number of time steps T >= 1.
        memory: budget in hidden-state units (int), bytes (``"512MiB"``), a percentage
            (``"5%"``) or ``"min"`` (the smallest feasible one); optional for full, chen,
            chen-recursive and recompute-all. See :mod:`membptt.planning.budget`.
        planner: ``"auto"`` (default: the library picks, module docstring), ``"steps"`` (the
            paper's DP on single steps; stepped execution), ``"blocks"`` (the DP on blocks of
            ``k`` steps priced as fused calls, :mod:`membptt.planning.blocks`) or
            ``"chains"`` (BPTT-HSM with fused chains of any length,
            :mod:`membptt.planning.chains`; needs a byte or percentage budget).
        block: a fixed block length ``k`` for the block planner (implies
            ``planner="blocks"``); None lets it choose ``k`` by predicted time.
        alpha: internal-state size in hidden-state units (>= 1; real ratios are rounded up).
            Defaults to the ratio of ``costs``' sizes when it has them.
        beta: size of an internal state whose input state is stored (1 <= beta <= alpha);
            None disables the beta form.
        costs: a :class:`CostModel` (``membptt.probe`` measures one); defaults to unit costs,
            under which the DP strategies reproduce the paper's ``C(t, m)``.
        percent_of: what a percentage is of: ``"stepped"`` BPTT's bytes (default) or
            ``"fused"`` BPTT's (needs ``costs.segments``); byte and percentage budgets bound
            stored states plus the working set where the cost model knows it.
        max_table_bytes, max_ops, max_dp_work: size limits (None: the defaults of
            :mod:`membptt.planning.limits`); a plan above them is refused with
            :class:`PlanTooLarge`, saying what it would need.
        **options: the strategy's own options (``Strategy.options``: ``segments`` for chen,
            ``branching`` for chen-recursive); any other keyword is refused.

    Raises ValueError naming the bad value and what is valid; :class:`BudgetTooSmall` (a
    ValueError) for a budget below the minimum, naming it.
    """
    return plans(strategy, seq_len, memory, planner=planner, block=block, alpha=alpha,
                 beta=beta, costs=costs, percent_of=percent_of, max_table_bytes=max_table_bytes,
                 max_ops=max_ops, max_dp_work=max_dp_work, **options)[0]


def plans(strategy: str, seq_len: int, memory=None, *, planner: str = "auto", block=None,
          alpha=None, beta=None, costs: CostModel | None = None, percent_of: str = "stepped",
          max_table_bytes: int | None = None, max_ops: int | None = None,
          max_dp_work: int | None = None, **options) -> list[Plan]:
    """Every planner's plan, least predicted time first: ``plans(...)[0]`` is
    :func:`plan`'s answer (same arguments, same errors; each plan's ``info["planners"]`` lists
    every planner tried). ``membptt.tune`` times these against each other.
    """
    pb = _problem(strategy, seq_len, alpha=alpha, beta=beta, costs=costs, options=options,
                  block=block, max_table_bytes=max_table_bytes, max_ops=max_ops,
                  max_dp_work=max_dp_work)
    check_percent_of(percent_of)
    limits.check_ops(2 * pb.seq_len, pb.max_ops, strategy=strategy, seq_len=pb.seq_len,
                     exact=False)  # every plan holds a forward and a backward per step
    names = _planners(pb.strategy, pb.costs, planner, block)
    if memory is not None and parse_memory(memory)[0] == "min":
        least = _minimum(pb, names)
        memory = f"{least.bytes}B" if least.bytes is not None else least.units
    req = None
    if memory is not None:
        req = request(memory, seq_len=pb.seq_len, costs=pb.costs, alpha=pb.alpha,
                      percent_of=percent_of)
    pb = Problem(pb.strategy, pb.seq_len, req, pb.alpha, pb.beta, pb.costs, pb.options,
                 pb.block, pb.max_table_bytes, pb.max_ops, pb.max_dp_work)
    if len(names) == 1:
        try:
            p = _MODULES[names[0]].plan(pb)
        except PlanTooLarge as e:
            # auto on a measured step model with a byte budget: the step DP is past a table
            # or work limit (long sequences, many tiny states), block plans on the same
            # prices are not; say which was refused. Never for unit-cost problems (the
            # paper's DP answers those exactly or refuses) nor for the op limit.
            if not (planner == "auto" and block is None and names == ["steps"]
                    and "blocks" in pb.strategy.planners and pb.costs.has_sizes
                    and req is not None and req.nbytes is not None
                    and e.limit in ("table", "work")):
                raise
            p = _MODULES["blocks"].plan(pb)
            p.info["planners"] = [{"planner": "steps", "refused": str(e)}, _row(p)]
            return [p]
        p.info["planners"] = [_row(p)]
        return [p]
    found, rows, errors, unusable = [], [], [], []
    for name in names:
        if name == "chains" and (req is None or req.nbytes is None):
            rows.append({"planner": name, "skipped": "needs a budget in bytes or a percentage"})
            continue
        try:
            p = _MODULES[name].plan(pb)
        except (BudgetTooSmall, PlanTooLarge) as e:
            errors.append(e)
            rows.append({"planner": name, "refused": str(e)})
            continue
        except ValueError as e:  # this planner does not apply to these costs (the message says)
            unusable.append(e)
            rows.append({"planner": name, "skipped": str(e)})
            continue
        found.append(p)
        rows.append(_row(p))
    if not found:
        if not errors and unusable:
            raise unusable[-1]
        too_large = [e for e in errors if isinstance(e, PlanTooLarge)]
        if too_large:
            raise PlanTooLarge("; ".join(f"planner {r['planner']!r}: {r['refused']}"
                                         for r in rows if "refused" in r))
        m = _minimum(pb, names)
        raise too_small(req, strategy=pb.name, seq_len=pb.seq_len, planner="auto",
                        minimum_units=m.units,
                        minimum_bytes=m.bytes if req.nbytes is not None else None,
                        what=f", tried {', '.join(names)}")
    found.sort(key=lambda p: (p.predicted_cost, p.predicted_peak_bytes or 0,
                              PLANNERS.index(p.planner)))
    for p in found:
        p.info["planners"] = [dict(r) for r in rows]
    return found


def _row(p: Plan) -> dict:
    return {"planner": p.planner, "block": p.block, "predicted_cost": p.predicted_cost,
            "predicted_peak_bytes": p.predicted_peak_bytes, "forward_ops": p.forward_ops}
