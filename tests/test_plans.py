"""Every strategy compiles to a valid plan: replayed by the simulator over a grid."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import membptt
from membptt.planning import (
    STRATEGIES,
    Backward,
    CostModel,
    Drop,
    Forward,
    PlanError,
    dp,
    parse_ops,
    simulate,
    simulate_ops,
)
from membptt.planning.ops import format_ops


def check_plan(p, budget=None):
    """Replay independently and check the invariants every plan must satisfy."""
    sim = simulate(p)
    assert sim.backward_ops == p.seq_len
    backs = [op.step for op in p.ops if isinstance(op, Backward)]
    assert backs == list(range(p.seq_len, 0, -1))
    assert sim.forward_ops == p.forward_ops == sum(isinstance(o, Forward) for o in p.ops)
    if budget is not None:
        assert sim.peak_units <= budget
    if "dp_cost" in p.info and p.costs.is_unit:
        assert p.forward_ops == p.info["dp_cost"]
    return sim


def test_golden_hsm_trace(published):
    g = published["fig3"]
    p = membptt.plan("hsm", 10, g["m"])
    assert p.trace() == g["trace_t10_m4"]
    assert (p.forward_ops, p.backward_ops, p.peak_memory) == (
        g["forward_ops"], g["backward_ops"], g["peak_slots"])
    assert membptt.plan("hsm", 4, 4).forward_ops == g["t4_cost"]


def test_headline_plan(published):
    h = published["headline"]
    p = membptt.plan("ism", h["seq_len"], "5%", alpha=5)
    assert p.budget.units == 250 and p.info["slots"] == h["ism_slots"]
    assert p.forward_ops == h["forward_ops"]
    assert p.peak_memory <= 250
    assert membptt.plan("msm", h["seq_len"], "5%", alpha=5).forward_ops <= h["forward_ops"]


GRID_T = [1, 2, 3, 5, 8, 13, 21]
GRID_AB = [(1, None), (2, None), (3, 2), (5, None), (5, 4), (4, 1)]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_over_grid(strategy):
    strat = STRATEGIES[strategy]
    for t in GRID_T:
        for alpha, beta in GRID_AB:
            lo = strat.min_memory(t, alpha, beta)
            budgets = sorted({lo, lo + 1, lo + 3, 2 * lo + 5, alpha * t + 2})
            if not strat.needs_memory:
                budgets.append(None)
            for m in budgets:
                p = membptt.plan(strategy, t, m, alpha=alpha, beta=beta)
                check_plan(p, m)
                assert p.strategy == strategy


def test_budget_below_minimum_names_minimum():
    for strategy, strat in STRATEGIES.items():
        lo = strat.min_memory(30, 3, None)
        if lo <= 0:
            continue
        with pytest.raises(ValueError, match=f"minimum.*{lo} units"):
            membptt.plan(strategy, 30, lo - 1, alpha=3)


def test_full_and_recompute_all():
    p = membptt.plan("full", 50, alpha=3)
    assert p.forward_ops == 50 and p.peak_memory == 1 + 49 * 3
    assert membptt.plan("full", 50, alpha=3, beta=2).peak_memory == 1 + 49 * 2
    r = membptt.plan("recompute-all", 50)
    assert r.forward_ops == 50 * 51 // 2 and r.peak_memory == 1
    assert r.forward_ops == dp.c_hsm(50, 1)


def test_chen_default_is_sqrt_segments():
    t, beta = 400, 4
    p = membptt.plan("chen", t, alpha=5, beta=beta)
    assert p.info["segments"] == 20
    assert p.forward_ops == 2 * t - 20  # about one extra forward pass
    assert p.peak_memory == 20 + 19 * beta  # ~ sqrt(t)(1 + beta)
    # fitted to a budget, never above it, and MSM does at least as well at that memory
    for m in (76, 100, 150, 300):
        c = membptt.plan("chen", t, m, alpha=5, beta=beta)
        assert c.peak_memory <= m
        assert membptt.plan("msm", t, c.peak_memory, alpha=5, beta=beta).forward_ops <= c.forward_ops


def test_chen_recursive_log_memory():
    p = membptt.plan("chen-recursive", 1024, alpha=5)
    assert p.info["branching"] == 2
    assert p.peak_memory == 1 + 10  # log2(t) boundaries + h_0
    h = membptt.plan("hsm", 1024, p.peak_memory)
    assert h.forward_ops <= p.forward_ops


def test_costs_change_the_plan_not_validity():
    costs = CostModel(run_fixed=5.0, run_per_step=0.2, forward_graph=1.0, backward=1.5)
    unit = membptt.plan("msm", 200, 60, alpha=4)
    meas = membptt.plan("msm", 200, 60, alpha=4, costs=costs)
    check_plan(meas, 60)
    assert meas.predicted_cost <= simulate(unit, costs=costs).predicted_cost + 1e-9
    assert meas.forward_cost == pytest.approx(meas.info["dp_cost"])


def test_bytes_and_fraction_budgets():
    costs = CostModel(hidden_bytes=1000, internal_bytes=4500, beta_bytes=3500)
    p = membptt.plan("msm", 100, "100kB", costs=costs)
    assert (p.alpha, p.beta) == (5, 4)
    assert p.budget.units == 100 + 1 and p.budget.bytes == 100_000
    assert p.peak_bytes <= 100_000
    f = membptt.plan("msm", 100, "10%", costs=costs)
    assert f.budget.bytes == 45_000 and f.peak_bytes <= 45_000
    q = membptt.plan("ism", 100, "10%", costs=costs)
    assert q.budget.units == 45 and q.info["slots"] == 9


@pytest.mark.parametrize("kwargs,match", [
    (dict(strategy="nope", seq_len=5, memory=3), "valid strategies: chen, chen-recursive"),
    (dict(strategy="hsm", seq_len=0, memory=3), "seq_len must be an integer >= 1, got 0"),
    (dict(strategy="hsm", seq_len=2.5, memory=3), "seq_len"),
    (dict(strategy="msm", seq_len=5, memory=3, alpha=0.5), "alpha must be >= 1, got 0.5"),
    (dict(strategy="msm", seq_len=5, memory=3, alpha=2, beta=3), "beta must be <= alpha"),
    (dict(strategy="msm", seq_len=5, memory="12 parsecs", alpha=2), "'12 parsecs' is not valid"),
    (dict(strategy="msm", seq_len=5, memory="1MiB", alpha=2), "needs state sizes"),
    (dict(strategy="msm", seq_len=5, memory="-3%", alpha=2), "not valid"),
    (dict(strategy="msm", seq_len=5, memory=2.5, alpha=2), "whole number"),
    (dict(strategy="msm", seq_len=5, memory=3), "needs alpha"),
    (dict(strategy="hsm", seq_len=5), "needs a memory budget"),
    (dict(strategy="hsm", seq_len=5, memory=0), "minimum of strategy 'hsm'.*1 units"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        membptt.plan(**kwargs)


@pytest.mark.parametrize("text,match", [
    ("F2 B1", "needs h_1"),
    ("F1(c) F2", "working core holds step 1"),
    ("F1 F2 B2", "neither in the working core nor stored"),
    ("F1(c) B1 F2(c) B2", "expected B2"),
    ("F1+h F2(c) B2 F1(c) B1", "still stored: h1"),
    ("F1(c)", "never backpropagated"),
    ("D1h", "hidden state 1 is not stored"),
    ("F1+h F1+h", "already stored"),
])
def test_simulator_rejects_invalid_plans(text, match):
    with pytest.raises(PlanError, match=match) as e:
        simulate_ops(parse_ops(text), 2)
    assert "op #" in str(e.value) or "plan ends" in str(e.value)


def test_simulator_beta_charging():
    # I1 is charged beta while h_0 is held; I2 beta while I1 is held, alpha once I1 is gone
    ops = parse_ops("F1+I F2+I F3(c) B3 B2 D2I B1 D1I")
    s = simulate_ops(ops, 3, alpha=5, beta=3, costs=CostModel(hidden_bytes=10,
                                                               internal_bytes=50, beta_bytes=30))
    assert s.peak_units == 1 + 3 + 3 and s.peak_bytes == 60
    ops = parse_ops("F1+h F2+I D1h F3(c) B3 B2 D2I F1(c) B1")
    s = simulate_ops(ops, 3, alpha=5, beta=3)
    assert s.peak_units == 1 + 5 and s.peak_op == 2  # dropping h1 makes I2 cost alpha


def test_ops_roundtrip():
    p = membptt.plan("msm", 30, 20, alpha=3, beta=2)
    assert tuple(parse_ops(format_ops(p.ops))) == p.ops
    assert str(Forward(3, "hidden")) == "F3+h" and str(Drop(2, "internal")) == "D2I"


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 80), m=st.integers(1, 120), alpha=st.integers(1, 6),
       beta_off=st.integers(0, 5), use_beta=st.booleans())
def test_random_msm_hsm_ism(t, m, alpha, beta_off, use_beta):
    beta = max(1, alpha - beta_off) if use_beta else None
    p = membptt.plan("msm", t, m, alpha=alpha, beta=beta)
    check_plan(p, m)
    h = membptt.plan("hsm", t, m)
    check_plan(h, m)
    assert p.forward_ops <= h.forward_ops
    assert h.forward_ops == dp.c_hsm_closed(t, m)
    if m >= alpha:
        i = membptt.plan("ism", t, m, alpha=alpha)
        check_plan(i, m)
        assert i.forward_ops == dp.c_ism_closed(t, m // alpha)
        assert p.forward_ops <= i.forward_ops


@settings(max_examples=30, deadline=None)
@given(t=st.integers(1, 60), extra=st.integers(0, 60), fixed=st.floats(0, 3),
       per=st.floats(0.05, 2), g=st.floats(0.1, 3))
def test_random_costs_plans_valid_and_cost_matches_dp(t, extra, fixed, per, g):
    costs = CostModel(run_fixed=fixed, run_per_step=per, forward_graph=g)
    for strategy in ("hsm", "msm"):
        p = membptt.plan(strategy, t, 1 + extra, alpha=3, beta=2, costs=costs)
        check_plan(p, 1 + extra)
        assert p.forward_cost == pytest.approx(p.info["dp_cost"], rel=1e-12, abs=1e-12)
