"""The step planner: a registered strategy's own builder on single steps (the paper's DPs and
the baselines), under any cost model; the plan runs stepped (no fused segments)."""

from __future__ import annotations

from . import limits
from . import strategies as S
from .budget import VALID_FORMS, Budget, bytes_for, too_small, units_for
from .plan import Plan
from .problem import MinimumBudget, Problem
from .replay import simulate_ops


def _needs_alpha(pb: Problem) -> None:
    if pb.alpha is None and pb.strategy.needs_alpha:
        raise ValueError(f"strategy {pb.name!r} needs alpha (internal-state size in "
                         "hidden-state units): pass alpha=... or costs with state sizes")


def working(pb: Problem) -> int:
    """What a byte budget sets aside beyond stored states: the stepped working set."""
    return pb.costs.working_bytes or 0


def minimum(pb: Problem) -> MinimumBudget:
    _needs_alpha(pb)
    units = pb.strategy.min_memory(pb.seq_len, pb.alpha, pb.beta)
    nbytes = None
    if pb.costs.hidden_bytes:
        nbytes = bytes_for(units, pb.costs.hidden_bytes, pb.ci) + working(pb)
    return MinimumBudget(pb.name, pb.seq_len, units, nbytes, None, "steps")


def budget(pb: Problem) -> Budget | None:
    """The step-level budget: a byte budget minus the working set, in units (refused when
    below the strategy's minimum)."""
    req = pb.req
    if req is None:
        if pb.strategy.needs_memory:
            raise ValueError(f"strategy {pb.name!r} needs a memory budget ({VALID_FORMS})")
        return None
    _needs_alpha(pb)
    hb = pb.costs.hidden_bytes
    if req.nbytes is not None:
        work = working(pb)
        avail = req.nbytes - work
        units = units_for(avail, hb, pb.ci) if avail >= 0 else None
        note = (req.note + (f"; minus the stepped working set {work:,} B" if work else "")
                + (f" = {avail:,} B for stored states; floor({avail:,} B / {hb:,} B per hidden "
                   f"state)" + (" + 1 (h_0)" if pb.ci else "") + f" = {units} units"
                   if units is not None else ""))
    else:
        units, note = req.units, req.note
    low = pb.strategy.min_memory(pb.seq_len, pb.alpha, pb.beta)
    if units is None or units < low:
        m = minimum(pb)
        raise too_small(req, strategy=pb.name, seq_len=pb.seq_len, planner="steps",
                        minimum_units=m.units,
                        minimum_bytes=m.bytes if req.nbytes is not None else None)
    return Budget(req.text, req.kind, units, req.nbytes if req.nbytes is not None else (
        units * hb if hb and req.kind == "units" else None), note)


def plan(pb: Problem) -> Plan:
    b = budget(pb)
    units = b.units if b else None
    sreq = S.Request(pb.seq_len, units, pb.alpha, pb.beta, pb.costs, dict(pb.options),
                     pb.max_table_bytes, pb.max_ops, pb.max_dp_work)
    ops, info = pb.strategy.build(sreq)
    limits.check_ops(len(ops), pb.max_ops, strategy=pb.name, seq_len=pb.seq_len)
    sim = simulate_ops(ops, pb.seq_len, alpha=pb.alpha or 1, beta=pb.beta,
                       count_initial=pb.ci, costs=pb.costs)
    if units is not None and sim.peak_units > units:  # a planner bug, never a user error
        raise AssertionError(f"{pb.name} plan exceeds its budget: {sim.peak_units} > {units}")
    return Plan(pb.name, pb.seq_len, tuple(ops), pb.alpha, pb.beta, pb.ci, pb.costs, b, sim,
                info, planner="steps")
