"""``membptt.plan``'s front door: the planner it picks, the budget it resolves once, the minimum
it names, and the one prediction every plan carries."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from test_blocks import HB, fused_costs  # the synthetic fused model of the block tests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_long import checkpoint_ops  # noqa: E402  torch.utils.checkpoint's schedule as a plan

import membptt
from membptt.planning import BudgetTooSmall, CostModel, PlanTooLarge, predict, simulate_ops

PROBED = Path(__file__).parent / "data" / "probed_lstm256_b64_cpu.json"

# (strategy, planner) pairs where the planner applies, per the strategies' registry entries
PAIRS = [(s, p) for s in ("hsm", "ism", "msm") for p in ("steps", "blocks", "chains", "auto")
         if p == "auto" or p in membptt.STRATEGIES[s].planners]


def test_registry_declares_the_planners():
    assert membptt.STRATEGIES["hsm"].planners == ("steps", "blocks", "chains")
    # an HSM chain plan is an MSM plan within the same budget
    assert membptt.STRATEGIES["msm"].planners == ("steps", "blocks", "chains")
    assert membptt.STRATEGIES["chen"].planners == ("steps",)
    with pytest.raises(ValueError, match="does not apply to strategy 'chen'; its planners: steps"):
        membptt.plan("chen", 20, planner="blocks", costs=fused_costs())


@pytest.mark.parametrize("strategy,planner", PAIRS)
@pytest.mark.parametrize("T", [1, 7, 30])
def test_min_memory_is_the_refusal_boundary(strategy, planner, T):
    """The returned bytes plan (and "min" plans there); one byte less raises BudgetTooSmall,
    whose message names the minimum in bytes and as a percentage, never negative units."""
    costs = fused_costs()
    lo = membptt.min_memory(strategy, T, costs=costs, planner=planner)
    p = membptt.plan(strategy, T, f"{lo.bytes}B", costs=costs, planner=planner)
    assert p.predicted_peak_bytes <= lo.bytes
    assert membptt.plan(strategy, T, "min", costs=costs, planner=planner).ops == p.ops
    with pytest.raises(BudgetTooSmall) as e:
        membptt.plan(strategy, T, f"{lo.bytes - 1}B", costs=costs, planner=planner)
    assert e.value.minimum_bytes == lo.bytes and e.value.unit == "bytes"
    msg = str(e.value)
    assert f"{lo.bytes - 1:,} B" in msg and f"{lo.bytes:,} B" in msg and "memory='min'" in msg
    assert "-" not in msg.split("below the minimum")[1].split("B")[0]
    # a percentage below the minimum: the minimum is said as a percentage of the same base
    ref = membptt.planning.budget.stepped_bptt_bytes(T, costs)
    pct = 100 * (lo.bytes - 1) / ref
    if pct > 0.01:
        with pytest.raises(BudgetTooSmall, match=r"% of stepped BPTT's") as e:
            membptt.plan(strategy, T, f"{pct * 0.9:.6f}%", costs=costs, planner=planner)
        assert f"{100 * lo.bytes / ref:.3g}% of stepped BPTT's" in str(e.value)


@pytest.mark.parametrize("strategy,planner", [(s, p) for s in ("hsm", "ism", "msm", "chen", "full")
                                              for p in ("steps", "blocks")
                                              if p in membptt.STRATEGIES[s].planners])
def test_min_memory_units_is_the_refusal_boundary(strategy, planner):
    kw = {} if strategy == "hsm" else {"alpha": 3}
    lo = membptt.min_memory(strategy, 40, planner=planner, **kw)
    assert lo.bytes is None
    membptt.plan(strategy, 40, lo.units, planner=planner, **kw)
    with pytest.raises(BudgetTooSmall, match=f"{lo.units} units") as e:
        membptt.plan(strategy, 40, lo.units - 1, planner=planner, **kw)
    assert e.value.minimum == lo.units and e.value.unit == "units"


@pytest.mark.parametrize("memory", ["5 %", " 5%", "5%%", "512 MiB", "5percent", "-5%", "0%",
                                    "1e400%", "2.5", "-3", "MIN", "min "])
def test_budget_forms_are_strict(memory):
    with pytest.raises(ValueError, match="'min' \\(the smallest feasible budget\\)|not valid|"
                                         "must be positive|finite|whole number|negative") as e:
        membptt.plan("msm", 50, memory, costs=fused_costs())
    assert repr(memory) in str(e.value) or str(memory) in str(e.value)


def test_auto_picks_the_least_predicted_time_and_records_the_candidates():
    costs = fused_costs()
    for strategy in ("hsm", "msm"):
        for memory in ("10%", "30%", "80%"):
            p = membptt.plan(strategy, 60, memory, costs=costs)
            rows = p.info["planners"]
            assert [r["planner"] for r in rows] == list(membptt.STRATEGIES[strategy].planners)
            done = [r for r in rows if "predicted_cost" in r]
            assert p.predicted_cost == min(r["predicted_cost"] for r in done)
            assert p.planner == min(done, key=lambda r: r["predicted_cost"])["planner"]
            for r in done:  # each candidate's prediction is that planner's plan's prediction
                q = membptt.plan(strategy, 60, memory, costs=costs, planner=r["planner"])
                assert q.predicted_cost == r["predicted_cost"]
    # without segments the library plans at step level
    plain = fused_costs(segments=None)
    assert membptt.plan("msm", 60, "30%", costs=plain).planner == "steps"


def test_every_plan_carries_the_one_prediction():
    """Plan, the planners and the rows read the same replay: the prediction of a plan is
    ``replay.predict`` of its ops and segment ends, and a stepped plan's equals the stepped
    simulator's times and bytes."""
    costs = fused_costs()
    for planner in ("steps", "blocks", "chains"):
        p = membptt.plan("hsm", 45, "40%", costs=costs, planner=planner)
        again = predict(p.ops, p.seq_len, costs, alpha=p.alpha, beta=p.beta,
                        segment_ends=p.segment_ends)
        assert again == p.prediction and p.predict() == p.prediction
    step = membptt.plan("msm", 45, "40%", costs=costs, planner="steps")
    sim = simulate_ops(step.ops, 45, alpha=step.alpha, beta=step.beta, costs=step.costs)
    assert step.predicted_cost == pytest.approx(step.info["dp_cost"] + 45 * costs.backward,
                                                rel=1e-12)
    assert step.predicted_cost == pytest.approx(sim.predicted_cost, rel=1e-12)
    assert step.peak_bytes == sim.peak_bytes
    # stored peak plus the working set, less the cursor and incoming gradient the working
    # set counts where the plan itself holds them (at most one hidden state each)
    top = sim.peak_bytes + step.costs.working_bytes
    assert top - 2 * costs.hidden_bytes <= step.predicted_peak_bytes <= top
    # a plan made under unit costs, priced by measured ones as it runs (stepped)
    unit = membptt.plan("msm", 45, 30, alpha=5)
    measured = unit.predict(fused_costs(segments=None))
    assert measured.total_cost == pytest.approx(simulate_ops(
        unit.ops, 45, alpha=5, costs=fused_costs(segments=None)).predicted_cost, rel=1e-12)


def test_old_block_values_say_what_to_write():
    costs = fused_costs()
    for old, new in (("auto", "planner='blocks'"), ("chains", "planner='chains'"),
                     ("default", "planner='auto'")):
        with pytest.raises(ValueError, match=new):
            membptt.plan("hsm", 20, "50%", costs=costs, block=old)
    with pytest.raises(ValueError, match="does not go with planner='chains'"):
        membptt.plan("hsm", 20, "50%", costs=costs, planner="chains", block=4)
    assert membptt.plan("hsm", 20, "50%", costs=costs, block=4).planner == "blocks"


def test_auto_refusal_names_the_least_minimum_over_planners():
    costs = fused_costs()
    lo = membptt.min_memory("msm", 40, costs=costs)
    with pytest.raises(BudgetTooSmall, match="tried steps, blocks") as e:
        membptt.plan("msm", 40, f"{lo.bytes - 1}B", costs=costs)
    assert e.value.minimum_bytes == lo.bytes
    assert lo.bytes == min(membptt.min_memory("msm", 40, costs=costs, planner=p).bytes
                           for p in ("steps", "blocks"))


@pytest.mark.skipif(not PROBED.exists(), reason="no probed cost fixture")
@pytest.mark.parametrize("strategy", ["hsm", "msm"])
def test_paper_size_lstm_gets_the_fastest_planner(strategy):
    """The shipped LSTM at the paper's sizes (T = 1000, hidden 256, batch 64) with probed
    costs (``tests/data``: one probe on this project's CPU): at 3-50 % the plan's predicted
    time is the least over every planner's candidate, and it is within the budget."""
    d = json.loads(PROBED.read_text())
    d.pop("_provenance")
    costs = CostModel(**d)
    for pct in (3, 5, 10, 20, 50):
        try:
            p = membptt.plan(strategy, 1000, f"{pct}%", costs=costs)
        except PlanTooLarge:  # every planner above the planning limits
            continue
        rows = p.info["planners"]
        done = [r for r in rows if "predicted_cost" in r]
        assert p.predicted_cost == min(r["predicted_cost"] for r in done)
        assert p.predicted_peak_bytes <= p.budget.bytes
        assert {r["planner"] for r in rows} == set(membptt.STRATEGIES[strategy].planners)
        assert math.isfinite(p.predicted_cost)


def test_hidden_state_units_keep_the_papers_accounting():
    # the paper's headline point and Fig. 3 are unchanged by the front door
    p = membptt.plan("msm", 1000, 250, alpha=5)
    assert (p.forward_ops, p.peak_memory, p.cost_per_step, p.planner) == (1950, 250, 1.95,
                                                                          "steps")
    assert membptt.plan("hsm", 10, 4).trace().startswith("F1 push h1 · F2 F3 F4 push h4")
    assert HB == 1000


@pytest.mark.parametrize("seed", range(4))
def test_plan_is_never_slower_than_the_uniform_checkpoint_at_its_memory(seed):
    """The plan class contains the peer's: on prices measured up to the sequence's length, at
    the budget equal to K uniform fused segments' predicted peak, membptt's plan predicts no
    more time than that schedule: the front door for every K dividing T, and for every K
    within two hidden states above it (the chain planner's fit rule, which counts a cursor
    and an incoming gradient beside every chain)."""
    import random

    from test_blocks import segments

    rng = random.Random(seed)
    T = 48
    lengths = (1, 2, 3, 5, 8, 12, 16, 24, 32, 48)
    fixed_f, fixed_b = rng.uniform(1, 20), rng.uniform(1, 20)  # per-call fixed costs
    seg = segments(
        lengths=lengths,
        forward=tuple(fixed_f + rng.uniform(0.5, 1.0) * L for L in lengths),
        backward=tuple(fixed_b + rng.uniform(1.0, 2.0) * L for L in lengths),
        stored_bytes=tuple(HB + 3 * HB * L for L in lengths),
        beta_bytes=tuple(3 * HB * L for L in lengths),
        working_bytes=tuple(10 * HB + 4 * HB * L for L in lengths),
        core_bytes=tuple(9 * HB + 4 * HB * L for L in lengths),
        run_lengths=(1, 4, 16, 48), run_seconds=tuple(rng.uniform(2, 6) + 0.2 * L
                                                      for L in (1, 4, 16, 48)))
    costs = fused_costs(segments=seg)
    for K in range(1, T + 1):
        ops, ends = checkpoint_ops(T, K)
        peer = predict(ops, T, costs, segment_ends=ends)
        # the chain DP's fit rule counts a cursor and a gradient beside every chain (the
        # replay does not where the plan holds them): it contains the schedule at the budget
        # that rule needs for it, at most two hidden states above the schedule's peak
        ruled = f"{peer.peak_bytes + 2 * HB}B"
        chains = membptt.plan("hsm", T, ruled, costs=costs, planner="chains")
        assert chains.predicted_cost <= peer.total_cost * (1 + 1e-9), K
        for strategy in ("hsm", "msm"):  # MSM contains HSM: its front door is never slower
            best = membptt.plan(strategy, T, ruled, costs=costs)
            assert best.predicted_cost <= chains.predicted_cost * (1 + 1e-9), (strategy, K)
            assert best.predicted_peak_bytes <= peer.peak_bytes + 2 * HB
            if T % K == 0:
                # K equal segments are a block plan, and the block planner takes the slots
                # the replay admits: the front door contains the schedule at exactly its peak
                best = membptt.plan(strategy, T, f"{peer.peak_bytes}B", costs=costs)
                assert best.predicted_cost <= peer.total_cost * (1 + 1e-9), (strategy, K)
                assert best.predicted_peak_bytes <= peer.peak_bytes


@pytest.mark.parametrize("T,K", [(1000, 8), (1000, 16), (600, 7), (250, 4)])
def test_uniform_block_lengths_are_candidates(T, K):
    """Blocks of ceil(T / K) steps are tried even where no segment length was measured (K
    balanced segments, the checkpoint's schedule), priced by interpolation; with memory for
    every bound, HSM on them is exactly that schedule: the bounds stored in a graph-free first
    sweep, then each block recomputed once with graph and backpropagated."""
    costs = fused_costs()
    k = -(-T // K)
    assert k not in costs.segments.lengths
    auto = membptt.plan("hsm", T, "1GiB", costs=costs, planner="blocks")
    assert k in [c["k"] for c in auto.info["candidates"]]
    p = membptt.plan("hsm", T, "1GiB", costs=costs, planner="blocks", block=k)
    n = -(-T // k)
    last = T - (n - 1) * k
    assert p.block == k and p.segment_ends == tuple(min(j * k, T) for j in range(1, n + 1))
    assert p.forward_ops == (T - last) + T  # the first sweep, then every block once with graph
    if T % K == 0:  # the same blocks as K balanced segments: the checkpoint's own ops
        ops, ends = checkpoint_ops(T, K)
        assert ends == p.segment_ends
        peer = predict(ops, T, costs, segment_ends=ends)
        assert p.predicted_cost == pytest.approx(peer.total_cost, rel=1e-12)


@pytest.fixture(scope="module")
def probed_small_lstm():
    """The example of the issue that found two minimums disagreeing: an LSTM cell loop
    (input 32, hidden 64, batch 8, T = 50), probed."""
    pytest.importorskip("torch")
    from membptt.measure import WorkloadConfig, make_workload

    w = make_workload(WorkloadConfig(model="lstm", seq_len=50, hidden=64, batch=8,
                                     input_size=32, classes=16))
    return membptt.probe(w.step_fn, w.state0, w.inputs)


@pytest.mark.parametrize("strategy", ["hsm", "msm"])
def test_probed_minimum_is_the_refusal_boundary(probed_small_lstm, strategy):
    costs = probed_small_lstm
    for planner in ("auto", *membptt.STRATEGIES[strategy].planners):
        lo = membptt.min_memory(strategy, 50, costs=costs, planner=planner)
        p = membptt.plan(strategy, 50, f"{lo.bytes}B", costs=costs, planner=planner)
        assert p.predicted_peak_bytes <= lo.bytes
        with pytest.raises(BudgetTooSmall) as e:
            membptt.plan(strategy, 50, f"{lo.bytes - 1}B", costs=costs, planner=planner)
        assert e.value.minimum_bytes == lo.bytes, planner


@pytest.mark.parametrize("over,field", [
    (dict(forward_graph=1.7e308), "CostModel.forward_graph"),
    (dict(run_per_step=1e299), "CostModel.run_per_step"),
    (dict(backward=1e200), "CostModel.backward"),  # lost precision: 1e200 beside 1.0
])
def test_cost_models_that_overflow_or_lose_precision_are_refused(over, field):
    """Finite but huge costs used to overflow in the DP (every plan tied, recompute-all was
    returned with ``predicted cost: inf``): refused, naming the field."""
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        membptt.plan("msm", 200, 20, alpha=3, costs=CostModel(**over))


def test_overflowing_segment_costs_are_refused_for_every_planner():
    from test_blocks import segments

    costs = fused_costs(segments=segments(forward=(1.0, 2.0, 3.0, 4.0, 1.7e308)))
    for planner in ("auto", "blocks", "chains"):
        with pytest.raises(ValueError, match=r"SegmentCosts\.forward\[4\] = 1\.7e\+308"):
            membptt.plan("hsm", 50, "50%", costs=costs, planner=planner)


@pytest.mark.parametrize("strategy", ["hsm", "msm"])
def test_the_same_cost_model_always_gives_the_same_plan(strategy):
    """Stable plans: planning is a pure function of (strategy, T, budget, costs): ties are
    broken by fixed rules, never by timing or order of evaluation."""
    costs = fused_costs()
    for memory in ("10%", "30%", "60%"):
        a = membptt.plan(strategy, 64, memory, costs=costs)
        b = membptt.plan(strategy, 64, memory, costs=fused_costs())
        assert (a.ops, a.planner, a.block, a.segment_ends) == (b.ops, b.planner, b.block,
                                                               b.segment_ends)
        assert a.info["planners"] == b.info["planners"]


def test_auto_without_segments_falls_back_to_blocks_past_the_step_dps_limit():
    """On the step model, a step DP past a planning limit is not the end: the front door
    plans on blocks (same prices), and says which planner was refused and why."""
    costs = CostModel(hidden_bytes=HB, internal_bytes=4 * HB, beta_bytes=3 * HB,
                      working_bytes=6 * HB)
    kw = dict(costs=costs, max_dp_work=2 * 10**5)
    with pytest.raises(PlanTooLarge) as e:  # an explicit planner is never replaced
        membptt.plan("msm", 3000, "10%", planner="steps", **kw)
    assert e.value.limit == "work"  # the limit that refused it (the fallback's condition)
    with pytest.raises(PlanTooLarge) as e:  # the op limit is never worked around
        membptt.plan("msm", 3000, "10%", max_ops=10, **kw)
    assert e.value.limit == "ops"
    p = membptt.plan("msm", 3000, "10%", **kw)
    assert p.planner == "blocks" and p.block > 1
    assert p.info["planners"][0]["planner"] == "steps" and "refused" in p.info["planners"][0]
    assert p.predicted_peak_bytes <= p.budget.bytes
    simulate_ops(p.ops, 3000, alpha=p.alpha, beta=p.beta, count_initial=True, costs=costs)
