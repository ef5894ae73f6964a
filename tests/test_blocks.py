"""Block planning (issue 9): fused-segment costs, plans on blocks of k steps, budgets that bound
stored states plus the working set, min_memory and the typed budget error."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import membptt
from membptt.cli import main
from membptt.planning import (
    BudgetTooSmall,
    CostModel,
    SegmentCosts,
    dp,
    format_ops,
    simulate,
    simulate_ops,
)
from membptt.planning.blocks import block_bounds, fit_runs
from membptt.planning.budget import fused_bptt_bytes, request
from membptt.planning.costs import interpolate
from membptt.planning.prices import Prices

HB = 1000  # bytes of one hidden state in the synthetic models below
LENGTHS = (1, 2, 4, 8, 16)
RUNS = (1, 4, 16, 64)


def segments(**over) -> SegmentCosts:
    """A synthetic fused model: per-step cost falls with length, stored bytes grow with it."""
    d = dict(lengths=LENGTHS,
             forward=tuple(2.0 + 0.5 * L for L in LENGTHS),
             backward=tuple(3.0 + 1.0 * L for L in LENGTHS),
             stored_bytes=tuple(HB + 3 * HB * L for L in LENGTHS),
             beta_bytes=tuple(3 * HB * L for L in LENGTHS),
             working_bytes=tuple(10 * HB + 4 * HB * L for L in LENGTHS),
             run_lengths=RUNS, run_seconds=tuple(1.0 + 0.25 * L for L in RUNS))
    d.update(over)
    return SegmentCosts(**d)


def fused_costs(**over) -> CostModel:
    d = dict(run_fixed=0.5, run_per_step=1.0, forward_graph=3.0, backward=5.0, hidden_bytes=HB,
             internal_bytes=5 * HB, beta_bytes=4 * HB, working_bytes=12 * HB,
             segments=segments())
    d.update(over)
    return CostModel(**d)


# -- SegmentCosts and CostModel ---------------------------------------------------------------

@pytest.mark.parametrize("over,match", [
    (dict(lengths=(2, 4, 8, 16, 32)), "start at 1"),
    (dict(lengths=(1, 2, 2, 8, 16)), "strictly increasing"),
    (dict(forward=(1.0, 2.0)), "forward has 2 entries"),
    (dict(backward=(1.0, 2.0, float("nan"), 4.0, 5.0)), "nan"),
    (dict(stored_bytes=(1000, 2000, 3000, 4000.5, 5000)), "4000.5"),
    (dict(working_bytes=(1, 2, 3, 4, -5)), "-5"),
    (dict(beta_bytes=(99999, 2, 3, 4, 5)), r"beta_bytes\[0\] = 99999"),
    (dict(run_seconds=(1.0,)), "one per run length"),
    (dict(run_lengths=(0, 4, 16, 64)), "0"),
    (dict(lengths="1,2"), "must be a tuple"),
])
def test_segment_costs_validation_names_bad_value(over, match):
    with pytest.raises(ValueError, match=match):
        segments(**over)


def test_cost_model_json_roundtrip_and_hashable():
    costs = fused_costs()
    back = CostModel(**json.loads(json.dumps(costs.to_dict())))
    assert back == costs and hash(back) == hash(costs)
    assert costs.time_key() == fused_costs(segments=None, working_bytes=None).time_key()
    with pytest.raises(ValueError, match="valid keys"):
        CostModel(segments={"lengths": [1], "bogus": 1})
    with pytest.raises(ValueError, match="working_bytes"):
        CostModel(working_bytes=-3)


def test_interpolation_between_and_beyond_measured_lengths():
    xs, ys = (1, 4, 16), (2.0, 5.0, 9.0)
    assert [interpolate(xs, ys, x) for x in (1, 4, 16)] == [2.0, 5.0, 9.0]
    assert interpolate(xs, ys, 10) == pytest.approx(7.0)  # piecewise linear, not a global line
    assert interpolate(xs, ys, 32) == pytest.approx(18.0)  # the longest call's per-step rate
    assert interpolate((2, 4), (3.0, 5.0), 1) == 3.0  # below: the smallest measurement
    seg = segments()
    assert seg.at("forward", 3) == pytest.approx(3.5) and seg.run(0) == 0.0


def test_run_fit_reports_worst_residual():
    # graph-free runs that are not affine in length: the fit says how far off it is
    secs = (1.0, 3.0, 6.0, 20.0)
    costs = fused_costs(segments=segments(run_seconds=secs))
    a, b_block, fit = fit_runs(Prices(costs, None, None), 4, 20)  # lengths 4..76 occur
    xs, ys = [4, 16, 64], [3.0, 6.0, 20.0]
    slope, icept = np.polyfit(xs, ys, 1)
    assert fit["lengths_used"] == xs and fit["kind"] == "least-squares line"
    assert (a, b_block) == (pytest.approx(icept), pytest.approx(4 * slope))
    worst = max(abs(icept + slope * x - y) / y for x, y in zip(xs, ys))
    assert fit["worst_rel_residual"] == pytest.approx(worst) and worst > 0.05
    p = membptt.plan("msm", 80, "50%", costs=costs, block=4)
    assert p.info["run_fit"]["worst_rel_residual"] == pytest.approx(worst)
    # a negative intercept is not allowed (the engine needs run_fixed >= 0): line through 0
    _, b0, fit0 = fit_runs(Prices(fused_costs(segments=segments(run_seconds=(1, 2, 10, 20))),
                                  None, None), 4, 10)
    assert fit0["kind"] == "line through 0" and b0 == pytest.approx(4 * 168 / 272)
    exact = fit_runs(Prices(fused_costs(), None, None), 4, 10)[2]
    assert exact["worst_rel_residual"] < 1e-12  # the default runs are affine


# -- unit costs: k = 1 is the paper's DP; k > 1 never beats the step optimum -----------------

@pytest.mark.parametrize("strategy,alpha,beta", [("hsm", None, None), ("ism", 3, None),
                                                 ("msm", 3, None), ("msm", 4, 3)])
def test_block_one_is_the_step_level_plan(strategy, alpha, beta):
    for t, m in [(10, 4), (37, 9), (100, 30)]:
        step = membptt.plan(strategy, t, m, alpha=alpha, beta=beta)
        blk = membptt.plan(strategy, t, m, alpha=alpha, beta=beta, block=1)
        assert blk.planner == "blocks" and blk.block == 1 and step.block is None
        assert blk.ops == step.ops
        assert blk.forward_ops == blk.forward_cost == step.forward_ops


def step_optimum(strategy, t, m, alpha, beta):
    """The step-level optimum a block plan competes with. An HSM block plan stores its core
    block's first k - 1 steps as internal states, so at step level it is an MSM plan (alpha = 1
    without alpha): its bound is C_MSM, which is <= C_HSM."""
    if strategy == "ism":
        return dp.cost(t, m // alpha, dp.ism_family())
    return dp.cost(t, m, dp.msm_family(alpha or 1, beta))


GRID = [(t, k) for t in (1, 5, 12, 23, 40) for k in (2, 3, 4, 8) if k <= t + 3]


@pytest.mark.parametrize("strategy,alpha,beta", [("hsm", None, None), ("ism", 2, None),
                                                 ("msm", 3, 2)])
def test_block_plans_valid_within_step_budget_and_not_below_optimum(strategy, alpha, beta):
    """Expanded block plans replay in the step simulator (ragged T included), stay within the
    unit budget at step level, and never use fewer forwards than the step optimum."""
    for t, k in GRID:
        lo = membptt.min_memory(strategy, t, alpha=alpha, beta=beta, block=k).units
        for m in sorted({lo, lo + 1, lo + 4, 2 * lo + 3}):
            p = membptt.plan(strategy, t, m, alpha=alpha, beta=beta, block=k)
            sim = simulate(p)  # raises on an invalid plan
            assert sim.peak_units <= m
            assert sim.backward_ops == t and p.block == min(k, t)
            assert p.forward_ops == p.forward_cost  # unit prices: cost = forward count
            assert p.forward_ops >= step_optimum(strategy, t, m, alpha, beta)
            if t % k == 0:
                assert p.forward_ops == p.info["block_dp_cost"]
        with pytest.raises(BudgetTooSmall):
            membptt.plan(strategy, t, lo - 1, alpha=alpha, beta=beta, block=k)


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 60), k=st.integers(1, 12), extra=st.integers(0, 40),
       alpha=st.integers(1, 5), strategy=st.sampled_from(["hsm", "ism", "msm"]))
def test_property_block_forward_count_at_least_step_optimum(t, k, extra, alpha, strategy):
    lo = membptt.min_memory(strategy, t, alpha=alpha, block=k).units
    m = lo + extra
    p = membptt.plan(strategy, t, m, alpha=alpha, block=k)
    assert simulate(p).peak_units <= m
    assert p.forward_ops >= step_optimum(strategy, t, m, alpha, None)


def test_golden_block_trace():
    """HSM on 2 blocks of 4 steps with ample memory: the block recursion F1+h F2(c) B2 pop
    F1(c) B1, expanded (core blocks store their first k - 1 steps, dropped after B)."""
    p = membptt.plan("hsm", 8, 10, block=4)
    assert format_ops(p.block_ops) == "F1+h F2(c) B2 D1h F1(c) B1"
    assert format_ops(p.ops) == (
        "F1 F2 F3 F4+h F5+I F6+I F7+I F8(c) B8 B7 B6 B5 D7I D6I D5I D4h "
        "F1+I F2+I F3+I F4(c) B4 B3 B2 B1 D3I D2I D1I")


# -- measured segments: prices, bytes and budgets ---------------------------------------------------

@pytest.mark.parametrize("strategy", ["hsm", "ism", "msm"])
@pytest.mark.parametrize("t,block", [(1, None), (9, None), (30, None), (64, None),
                                     (23, 3), (30, 8), (50, 16)])
def test_fused_plans_bound_the_predicted_peak(strategy, t, block):
    costs = fused_costs()
    for memory in ("5%", "20%", "60%", "200kB"):
        try:
            p = membptt.plan(strategy, t, memory, costs=costs, planner="blocks", block=block)
        except BudgetTooSmall as e:
            asked = request(memory, seq_len=t, costs=costs, alpha=None).nbytes
            assert e.minimum > asked and e.requested == memory
            continue
        simulate(p)
        assert p.predicted_peak_bytes <= p.budget.bytes
        # the replay at each core is within the DP's bound: block-level stored peak plus the
        # k-step working set
        assert p.peak_bytes <= p.predicted_peak_bytes
        assert p.predicted_peak_bytes <= p.info["block_stored_peak_bytes"] + p.info["working_bytes"]
        cands = p.info["candidates"]
        assert any(c["k"] == p.block and c["predicted_cost"] == p.predicted_cost
                   for c in cands)
        assert p.predicted_cost == min(x["predicted_cost"] for x in cands if x["feasible"])
        # the measured lengths and every uniform length ceil(t / K), K = 2..128, on the
        # strategy's own block DP; MSM's also on HSM's (an HSM plan is an MSM plan, and its
        # lone cores reserve less of a byte budget than linked ones)
        uniform = {-(-t // K) for K in range(2, min(128, t) + 1)}
        expect = sorted({L for L in LENGTHS if L <= t} | uniform) if block is None else [block]
        families = {"hsm": ["hsm"], "ism": ["ism"], "msm": ["msm", "hsm"]}[strategy]
        for fam in families:
            assert [c["k"] for c in cands if c["family"] == fam] == expect
        assert {c["family"] for c in cands} == set(families)


def test_stored_block_costs_its_measured_bytes():
    """A plan that stores every block as internal: the stored peak is the sum of the stored
    segments' measured bytes (first block beta form: h_0 is the caller's), the core free."""
    costs = fused_costs()
    p = membptt.plan("ism", 32, f"{32 * costs.internal_bytes + costs.working_bytes}B",
                     costs=costs, block=8)
    seg = costs.segments
    j = seg.lengths.index(8)
    assert format_ops(p.block_ops).startswith("F1+I F2+I F3+I F4(c)")
    assert p.peak_bytes == 3 * seg.beta_bytes[j]  # inputs held: h_0, then the previous blocks
    assert p.info["working_bytes"] == seg.working_bytes[j]


def test_ragged_block_priced_at_its_length():
    costs = fused_costs()
    p = membptt.plan("msm", 21, f"{21 * costs.internal_bytes + costs.working_bytes}B",
                     costs=costs, block=8)  # blocks of 8, 8, 5
    seg = costs.segments
    assert block_bounds(21, 8) == [0, 8, 16, 21]
    assert p.prediction.backward_cost == pytest.approx(2 * seg.at("backward", 8)
                                                  + seg.at("backward", 5))


def test_block_none_keeps_step_level_planning():
    costs = fused_costs()
    plain = fused_costs(segments=None)
    for strategy, memory in (("hsm", "30%"), ("msm", "30%"), ("full", None), ("chen", None)):
        a = membptt.plan(strategy, 50, memory, costs=costs, planner="steps")
        b = membptt.plan(strategy, 50, memory, costs=plain)
        assert type(a) is type(b) and a.ops == b.ops
    assert membptt.plan("full", 50, costs=costs).block is None  # default: step level


def test_step_level_budget_holds_working_set():
    costs = fused_costs(segments=None)
    p = membptt.plan("msm", 100, "40kB", costs=costs)
    assert p.budget.units == math.floor((40_000 - 12 * HB) / HB) + 1
    assert p.predicted_peak_bytes == p.peak_bytes + 12 * HB <= 40_000
    # the percentage is of stepped BPTT's bytes, working set included: T stored steps each
    # holding beta bytes (their input is the previous step's output), plus the working set
    q = membptt.plan("msm", 100, "10%", costs=costs)
    assert q.budget.bytes == int(0.1 * (100 * 4 * HB + 12 * HB))
    # without a working set the rules are unchanged
    r = membptt.plan("msm", 100, "10%", costs=fused_costs(segments=None, working_bytes=None))
    assert r.budget.bytes == 0.1 * 100 * 5 * HB and r.predicted_peak_bytes is None


def test_percent_of_fused():
    costs = fused_costs()
    seg = costs.segments
    assert fused_bptt_bytes(12, costs) == math.ceil(seg.at("working_bytes", 12))
    assert fused_bptt_bytes(40, costs) == seg.working_bytes[-1] + 24 * seg.beta_bytes[-1] // 16
    p = membptt.plan("msm", 40, "50%", costs=costs, percent_of="fused")
    assert p.budget.bytes == int(0.5 * fused_bptt_bytes(40, costs))
    assert p.predicted_peak_bytes <= p.budget.bytes
    with pytest.raises(ValueError, match="needs costs.segments"):
        membptt.plan("msm", 40, "50%", costs=fused_costs(segments=None), percent_of="fused")
    with pytest.raises(ValueError, match="percent_of must be one of stepped, fused"):
        membptt.plan("msm", 40, "50%", costs=costs, percent_of="stepped BPTT")


# -- min_memory and the typed error ---------------------------------------------------------------

@pytest.mark.parametrize("strategy,kw", [("hsm", {}), ("ism", {"alpha": 3}), ("msm", {"alpha": 3}),
                                         ("chen", {"alpha": 3}), ("full", {"alpha": 2})])
def test_min_memory_units_is_the_threshold(strategy, kw):
    for block in ([None, 1, 4] if strategy in ("hsm", "ism", "msm") else [None]):
        lo = membptt.min_memory(strategy, 25, block=block, **kw)
        assert lo.bytes is None and lo.block == block
        assert lo.planner == ("steps" if block is None else "blocks")
        membptt.plan(strategy, 25, lo.units, block=block, **kw)
        assert membptt.plan(strategy, 25, "min", block=block, **kw).ops == membptt.plan(
            strategy, 25, lo.units, block=block, **kw).ops
        with pytest.raises(BudgetTooSmall) as e:
            membptt.plan(strategy, 25, lo.units - 1, block=block, **kw)
        assert isinstance(e.value, ValueError) and "below the minimum" in str(e.value)
        assert (e.value.requested, e.value.minimum, e.value.strategy, e.value.seq_len) == (
            lo.units - 1, lo.units, strategy, 25)


@pytest.mark.parametrize("strategy", ["hsm", "ism", "msm"])
@pytest.mark.parametrize("planner,block", [("steps", None), ("blocks", 4), ("blocks", None),
                                           ("auto", None)])
def test_min_memory_bytes_is_the_threshold(strategy, planner, block):
    costs = fused_costs()
    lo = membptt.min_memory(strategy, 30, costs=costs, planner=planner, block=block)
    p = membptt.plan(strategy, 30, f"{lo.bytes}B", costs=costs, planner=planner, block=block)
    assert p.predicted_peak_bytes <= lo.bytes
    assert membptt.plan(strategy, 30, "min", costs=costs, planner=planner,
                        block=block).budget.bytes == lo.bytes
    with pytest.raises(BudgetTooSmall) as e:
        membptt.plan(strategy, 30, f"{lo.bytes - 1}B", costs=costs, planner=planner,
                     block=block)
    assert e.value.strategy == strategy and e.value.seq_len == 30
    assert e.value.minimum_bytes == lo.bytes and e.value.unit == "bytes"
    assert f"{lo.bytes:,} B" in str(e.value) and "units" not in str(e.value).split(":")[-1]


@pytest.mark.parametrize("kwargs,match", [
    (dict(strategy="chen", block=4), "does not apply to strategy 'chen'"),
    (dict(strategy="msm", block="auto"), "planner='blocks'"),
    (dict(strategy="hsm", block="chains"), "planner='chains'"),
    (dict(strategy="msm", block=0), "block must be"),
    (dict(strategy="msm", block="big"), "'big'"),
    (dict(strategy="msm", block=True), "True"),
])
def test_bad_block_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        membptt.plan(seq_len=20, memory="50%", costs=fused_costs(), **kwargs)


def test_byte_budget_needs_sizes():
    with pytest.raises(ValueError, match="'1MB' is in bytes, which needs state sizes"):
        membptt.plan("msm", 40, "1MB", alpha=3, block=4)


def test_segments_need_hidden_bytes():
    costs = CostModel(segments=segments())
    with pytest.raises(ValueError, match="hidden_bytes"):
        membptt.plan("msm", 20, 40, costs=costs)


def test_cli_block_flag(capsys, tmp_path):
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(fused_costs().to_dict()))
    code = main(["plan", "--strategy", "msm", "--seq-len", "40", "--memory", "30%", "--costs",
                 str(path), "--json"])
    d = json.loads(capsys.readouterr().out)
    uniform = {-(-40 // K) for K in range(2, 41)}
    assert code == 0 and d["predicted_peak_bytes"] <= d["budget"]["bytes"]
    assert d["planner"] == "chains" or d["block"] in set(LENGTHS) | uniform
    code = main(["plan", "--strategy", "msm", "--seq-len", "40", "--memory", "30%", "--costs",
                 str(path), "--planner", "steps"])
    out = capsys.readouterr().out
    assert code == 0 and "blocks of" not in out
    code = main(["plan", "--strategy", "hsm", "--seq-len", "40", "--memory", "3", "--block", "8"])
    err = capsys.readouterr().err
    assert code == 2 and "below the minimum" in err


def test_step_replay_matches_block_replay_counts():
    costs = fused_costs()
    p = membptt.plan("msm", 45, "25%", costs=costs, planner="blocks")
    k = p.block
    n = -(-45 // k)
    again = simulate_ops(p.block_ops, n, alpha=p.info["block_alpha"], beta=p.info["block_beta"])
    assert again.backward_ops == n and again.peak_units == p.peak_memory
    assert sum(min(k, 45 - (op.step - 1) * k) for op in p.block_ops
               if isinstance(op, membptt.Forward)) == p.forward_ops


def test_stepped_percent_from_segments_alone():
    """Without step sizes, the segments' 1-step values stand in for stepped BPTT's bytes."""
    seg = segments()
    p = membptt.plan("msm", 40, "20%", costs=CostModel(hidden_bytes=HB, segments=seg),
                     planner="blocks", block=4)
    assert p.budget.bytes == int(0.2 * (40 * seg.beta_bytes[0] + seg.working_bytes[0]))
    assert p.predicted_peak_bytes <= p.budget.bytes and p.info["k_measured"]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("strategy", ["hsm", "ism", "msm"])
def test_block_plans_run_in_the_executor_with_exact_gradients(strategy):
    """Expanded block plans (ragged T = 11) are ordinary step plans: today's executor runs
    them and the gradients equal plain autograd's (float64)."""
    torch = pytest.importorskip("torch")
    from membptt.execution import bptt, plain_bptt
    from membptt.models import LSTMLanguageModel, synthetic_task

    T = 11
    torch.manual_seed(0)
    model = LSTMLanguageModel(4, 6, 4, dropout=0.0).to(torch.float64)
    x, y = synthetic_task(T, 3, 4, dense=True, seed=0, dtype=torch.float64)
    s0 = tuple(t.normal_() for t in model.initial_state(3))

    def grads(run):
        model.zero_grad(set_to_none=True)
        run().backward()
        return [p.grad.clone() for p in model.parameters()]

    ref = grads(lambda: plain_bptt(model, s0, (x, y))[0])
    for k in (2, 4):
        lo = membptt.min_memory(strategy, T, alpha=3, beta=2, block=k).units
        for m in (lo, lo + 6):
            p = membptt.plan(strategy, T, m, alpha=3, beta=2, block=k)
            got = grads(lambda p=p: bptt(model, s0, (x, y), p))
            for a, b in zip(got, ref):
                assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("strategy", ["hsm", "ism", "msm"])
def test_dp_value_equals_repriced_plan_when_model_is_exact(strategy):
    """No ragged block and graph-free runs affine within the measured range: the block DP's
    own value (plus n backwards) is exactly the re-priced prediction of the emitted plan."""
    costs = fused_costs()
    for k, memory in [(4, "15%"), (8, "40%"), (16, "100%")]:
        p = membptt.plan(strategy, 64, memory, costs=costs, block=k)
        c = next(c for c in p.info["candidates"] if c["k"] == k)
        assert p.info["run_fit"]["worst_rel_residual"] < 1e-12
        assert c["dp_model_cost"] == pytest.approx(p.predicted_cost, rel=1e-12)


def test_a_block_length_over_the_planning_limits_is_left_out(monkeypatch):
    """planner="blocks" skips a k whose DP exceeds a planning limit (here the work limit, lowered
    so that k = 1, the largest table, needs too much) and plans with the best of the others,
    marking the refused k; when every k is refused, the plan is refused (PlanTooLarge)."""
    from membptt.planning import dp, limits

    costs = fused_costs()
    dp.clear_cache()
    full = membptt.plan("msm", 64, "60%", costs=costs, planner="blocks")
    works = {}
    for c in full.info["candidates"]:
        if c["family"] != "msm":
            continue
        dp.clear_cache()
        p = membptt.plan("msm", 64, "60%", costs=costs, block=c["k"])
        works[c["k"]] = max(t.work for t in dp._CACHE.values())
    assert works[1] == max(works.values()) > min(works.values())
    monkeypatch.setattr(limits, "DEFAULT_MAX_DP_WORK", works[1] - 1)
    dp.clear_cache()
    p = membptt.plan("msm", 64, "60%", costs=costs, planner="blocks")
    cands = {c["k"]: c for c in p.info["candidates"] if c["family"] == "msm"}
    assert not cands[1]["feasible"] and "max_dp_work" in cands[1]["refused"]
    assert p.predicted_cost == min(
        c["predicted_cost"] for c in p.info["candidates"] if c["feasible"])
    monkeypatch.setattr(limits, "DEFAULT_MAX_DP_WORK", 1)
    dp.clear_cache()
    with pytest.raises(limits.PlanTooLarge, match="no block length fits"):
        membptt.plan("msm", 64, "60%", costs=costs, planner="blocks")
    dp.clear_cache()


def test_plan_limits_reach_block_planning():
    """max_dp_work, max_table_bytes and max_ops given to plan() bound block plans too."""
    from membptt.planning import dp, limits

    costs = fused_costs()
    dp.clear_cache()
    p = membptt.plan("msm", 64, "60%", costs=costs, block=1)
    work = min(t.work for t in dp._CACHE.values())  # MSM's table, and HSM's beside it
    dp.clear_cache()
    with pytest.raises(limits.PlanTooLarge, match="max_dp_work"):
        membptt.plan("msm", 64, "60%", costs=costs, block=1, max_dp_work=work - 1)
    with pytest.raises(limits.PlanTooLarge, match="max_table_bytes"):
        membptt.plan("msm", 64, "60%", costs=costs, block=1, max_table_bytes=100)
    with pytest.raises(limits.PlanTooLarge, match="max_ops"):
        membptt.plan("msm", 64, "60%", costs=costs, block=1, max_ops=len(p.ops) - 1)
    assert membptt.plan("msm", 64, "60%", costs=costs, block=1, max_ops=len(p.ops)).ops == p.ops
    dp.clear_cache()
