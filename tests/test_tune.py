"""Measured plan selection (``membptt.tune``, issue 18): the candidates all fit the budget and
include the checkpoint's own schedule, the pick follows the per-round ratios with a margin,
timing leaves no trace on ``.grad`` or the RNG, and the picked plan's gradients are plain
autograd's."""

import importlib
import math

import pytest
import torch
from test_blocks import fused_costs

import membptt
from membptt.execution import bptt, plain_bptt
from membptt.execution.tune import TUNE_PREDICTED, candidates, pick
from membptt.measure.methods import get_method, make_method, parse_method_spec
from membptt.measure.workload import WorkloadConfig, make_workload
from membptt.models import LSTMLanguageModel, synthetic_task
from membptt.planning import plans

tune_mod = importlib.import_module("membptt.execution.tune")  # (the package exports the function)

T = 37


def _model(dtype=torch.float64, seed=0, B=3):
    torch.manual_seed(seed)
    model = LSTMLanguageModel(5, 6, 5).to(dtype)
    x, y = synthetic_task(T, B, 5, dense=True, seed=seed, dtype=dtype)
    return model, model.initial_state(B), (x, y)


@pytest.mark.parametrize("memory", ["40000B", "60000B", "90000B"])
def test_candidates_fit_the_budget_and_include_the_checkpoint_schedule(memory):
    c = fused_costs()
    cands = candidates("msm", T, memory, costs=c)
    first = membptt.plan("msm", T, memory, costs=c)
    _, p0 = cands[0]
    assert (p0.planner, p0.block, p0.ops) == (first.planner, first.block, first.ops)
    for _, p in cands:
        assert p.predicted_peak_bytes <= p.budget.bytes == first.budget.bytes
        assert p.predicted_cost <= TUNE_PREDICTED * p0.predicted_cost
        membptt.simulate(p)  # a valid plan
    # no two candidates make the same calls
    keys = [(p.planner, p.block, tuple(p.ops)) for _, p in cands]
    assert len(set(keys)) == len(keys)
    # the uniform checkpoint schedule with the fewest segments that fits is a candidate (the
    # peer a torch.utils.checkpoint user would run at this memory)
    for K in (4, 8, 16, 32):
        k = -(-T // K)
        try:
            ref = membptt.plan("hsm", T, memory, costs=c, block=k)
        except (membptt.BudgetTooSmall, membptt.PlanTooLarge):
            continue
        assert any(p.planner == "blocks" and p.block == k and p.ops == ref.ops
                   for _, p in cands), (K, [lab for lab, _ in cands])
        break
    else:
        pytest.fail("no uniform schedule fits")


def test_plans_lists_every_planner_least_predicted_first():
    c = fused_costs()
    found = plans("msm", T, "60000B", costs=c)
    assert [p.predicted_cost for p in found] == sorted(p.predicted_cost for p in found)
    assert {p.planner for p in found} == {"steps", "blocks", "chains"}
    assert membptt.plan("msm", T, "60000B", costs=c).ops == found[0].ops
    with pytest.raises(membptt.BudgetTooSmall):
        plans("msm", T, "1000B", costs=c)


def test_pick_follows_per_round_ratios_with_a_margin():
    # candidate 1 is 10 % faster in every round: picked; candidate 2 sat out after round 1
    times = {0: [1.0, 2.0, 1.0], 1: [0.9, 1.8, 0.9], 2: [1.5, None, None]}
    win, ratios = pick(times, 0.02)
    assert win == 1 and ratios[1] == pytest.approx(0.9) and ratios[2] == pytest.approx(1.5)
    # 1 % faster: inside the margin, the planner's choice stays
    win, _ = pick({0: [1.0, 1.0, 1.0], 1: [0.99, 0.99, 0.99]}, 0.02)
    assert win == 0
    # a tie between two faster candidates goes to the lower index
    win, _ = pick({0: [1.0], 1: [0.8], 2: [0.8]}, 0.0)
    assert win == 1
    # per-round ratios, not ratios of medians: a slow spell of the machine hits both alike
    win, r = pick({0: [1.0, 3.0, 3.0], 1: [0.95, 2.85, 2.85]}, 0.02)
    assert win == 1 and r[1] == pytest.approx(0.95)
    # a candidate that never ran is never picked
    assert pick({0: [1.0], 1: [None]}, 0.0)[1][1] == math.inf


@pytest.mark.parametrize("margin", [-0.1, 1.0, float("nan"), "2%", True])
def test_pick_refuses_a_bad_margin(margin):
    with pytest.raises(ValueError, match="margin must be a number in"):
        pick({0: [1.0]}, margin)


@pytest.mark.parametrize("kw,match", [
    (dict(rounds=0), "rounds must be an integer >= 1, got 0"),
    (dict(rounds=1.5), "rounds must be an integer"),
    (dict(min_seconds=-1), "min_seconds must be a finite number of seconds >= 0, got -1"),
    (dict(margin=2), "margin must be a number in"),
    (dict(peers=-1), "peers must be an integer >= 0"),
])
def test_tune_refuses_bad_options_before_running(kw, match):
    model, s0, inputs = _model()
    with pytest.raises(ValueError, match=match):
        membptt.tune(model, s0, inputs, "msm", "60000B", costs=fused_costs(), **kw)


@pytest.mark.usefixtures("one_torch_thread")
def test_tune_leaves_no_trace_and_its_plan_gives_plain_gradients():
    model, s0, inputs = _model()
    params = list(model.parameters())
    for q in params[:2]:
        q.grad = torch.full_like(q, 7.0)
    kept = [q.grad for q in params]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    p = membptt.tune(model, s0, inputs, "msm", "60000B", costs=fused_costs(), rounds=2,
                     min_seconds=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(q.grad is g for q, g in zip(params, kept))
    assert all(float(q.grad.unique()) == 7.0 for q in params[:2])
    info = p.info["tune"]
    labels = [r["label"] for r in info["candidates"]]
    assert info["picked"] in labels and info["planner_choice"] == labels[0]
    assert sum(r["picked"] for r in info["candidates"]) == 1
    assert info["candidates"][0]["rounds"] == 2 and info["rounds"] == 2
    assert all(r["rounds"] <= 2 for r in info["candidates"])
    assert p.predicted_peak_bytes <= p.budget.bytes
    # the picked plan, run, equals plain autograd in float64
    model.zero_grad(set_to_none=True)
    plain_bptt(model, s0, inputs)[0].backward()
    ref = [q.grad.clone() for q in params]
    model.zero_grad(set_to_none=True)
    bptt(model, s0, inputs, p).backward()
    for q, r in zip(params, ref):
        assert torch.allclose(q.grad, r, rtol=1e-10, atol=1e-12)


@pytest.mark.usefixtures("one_torch_thread")
def test_tune_sends_nothing_upstream_and_handles_a_plain_callable_step():
    """Inputs computed by the caller's graph (an input projection that requires grad) and a
    step that is a closure over a module, not a module: tuning runs on detached copies, so
    nothing reaches the projection's weights, and the closure's parameters (found by walking
    the step's graph) get their .grad back."""
    model, s0, (x, y) = _model()
    proj = torch.nn.Linear(5, 5).double()
    xin = proj(x)  # non-leaf, requires grad
    assert xin.requires_grad and not xin.is_leaf

    def step(state, xt):
        return model(state, xt)

    marker = [torch.full_like(q, 3.0) for q in model.parameters()]
    for q, g in zip(model.parameters(), marker):
        q.grad = g
    p = membptt.tune(step, s0, (xin, y), "msm", "60000B", costs=fused_costs(), rounds=2,
                     min_seconds=0)
    assert proj.weight.grad is None and proj.bias.grad is None
    assert all(q.grad is g for q, g in zip(model.parameters(), marker))
    assert all(float(q.grad.unique()) == 3.0 for q in model.parameters())
    assert len(p.info["tune"]["candidates"]) >= 2
    # the caller's own iteration with the tuned plan still backpropagates into the projection
    model.zero_grad(set_to_none=True)
    bptt(step, s0, (xin, y), p).backward()
    assert proj.weight.grad is not None and torch.isfinite(proj.weight.grad).all()


def test_tune_puts_grads_and_rng_back_when_an_iteration_raises(monkeypatch):
    model, s0, inputs = _model()
    params = list(model.parameters())
    params[0].grad = torch.ones_like(params[0])
    kept = params[0].grad
    rng = torch.get_rng_state()
    calls = [0]
    real = tune_mod.bptt

    def flaky(*a, **k):
        calls[0] += 1
        if calls[0] == 3:
            torch.rand(5)  # moves the RNG, as a dropout step would
            raise RuntimeError("boom in iteration 3")
        return real(*a, **k)

    monkeypatch.setattr(tune_mod, "bptt", flaky)
    with pytest.raises(RuntimeError, match="boom in iteration 3"):
        membptt.tune(model, s0, inputs, "msm", "60000B", costs=fused_costs(), rounds=2,
                     min_seconds=0)
    assert params[0].grad is kept and float(kept.unique()) == 1.0
    assert all(q.grad is None for q in params[1:])
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_pinned_planner_or_block_times_nothing_else():
    model, s0, inputs = _model()
    for kw in (dict(planner="chains"), dict(block=8)):
        cands = candidates("msm", T, "60000B", costs=fused_costs(), **kw)
        assert len(cands) == 1, (kw, [lab for lab, _ in cands])
        p = membptt.tune(model, s0, inputs, "msm", "60000B", costs=fused_costs(), **kw)
        assert p.info["tune"]["rounds"] == 0 and p.info["tune"]["candidates"][0]["picked"]


def test_tune_keeps_what_is_measured_faster(monkeypatch):
    """The pick is wired to the timings: a candidate measured 10 % faster in every round is
    returned, with what was measured."""
    model, s0, inputs = _model()
    c = fused_costs()
    cands = candidates("msm", T, "40000B", costs=c)
    assert len(cands) >= 3

    def fake(step, state0, inputs, ps, rounds, min_seconds):
        return {i: [1.0 - 0.1 * (i == 2)] * rounds for i in range(len(ps))}

    monkeypatch.setattr(tune_mod, "_time", fake)
    p = membptt.tune(model, s0, inputs, "msm", "40000B", costs=c, rounds=3)
    assert p.info["tune"]["picked"] == cands[2][0]
    assert (p.planner, p.block, p.ops) == (cands[2][1].planner, cands[2][1].block,
                                           cands[2][1].ops)
    row = p.info["tune"]["candidates"][2]
    assert row["picked"] and row["ratio"] == pytest.approx(0.9) and row["measured_s"] == 0.9


def test_method_option_tune():
    assert parse_method_spec("msm-measured:memory=5%:tune=1")[1] == {"memory": "5%",
                                                                     "tune": True}
    with pytest.raises(ValueError, match="option tune .* must be 0 or 1, got 'yes'"):
        parse_method_spec("msm-measured:tune=yes")
    w = make_workload(WorkloadConfig(model="lstm", seq_len=24, hidden=8, batch=2,
                                     input_size=8, classes=8))
    with pytest.raises(ValueError, match="use msm-measured"):
        get_method("msm").check_options({"tune": True}, {"tune": True}, 24)
    with pytest.raises(ValueError, match="use msm-measured"):
        make_method("msm:memory=50%:tune=1", w).prepare()


@pytest.mark.usefixtures("one_torch_thread")
def test_tuned_method_runs_inside_its_budget():
    w = make_workload(WorkloadConfig(model="lstm", seq_len=48, hidden=8, batch=2,
                                     input_size=8, classes=8))
    m = make_method("msm-measured:memory=40%:tune=1", w)
    m.prepare()
    info = m.info()
    assert "tune_picked=" in info["params"] and "tune_s=" in info["params"]
    assert m.plan.predicted_peak_bytes <= m.plan.budget.bytes
    w.zero_grad()
    loss = m.run()
    assert torch.isfinite(loss)


# -- benchmarks/bench_steady.py: each method in its own process ---------------------------------

def _bench_steady():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_steady

    return bench_steady


@pytest.mark.usefixtures("one_torch_thread")
def test_bench_steady_child_runs_each_role_inside_the_checkpoint_peak(tmp_path):
    import json

    bs = _bench_steady()
    wc = dict(model="lstm", seq_len=40, hidden=8, batch=2, input_size=8, classes=8)
    w = make_workload(WorkloadConfig(**wc))
    (tmp_path / "c.json").write_text(json.dumps(
        membptt.probe(w.step_fn, w.state0, w.inputs, repeats=1).to_dict()))
    spec = dict(k=4, workload=wc, threads=1, costs=str(tmp_path / "c.json"), warmup=1, iters=2)
    ck = bs.child({**spec, "role": "ckpt"})
    assert len(ck["times_s"]) == 2 and ck["median_s"] > 0 and ck["peak_bytes"] > 0
    for role in ("own", "membptt", "tuned"):
        got = bs.child({**spec, "role": role, "memory": ck["peak_bytes"]})
        assert got["peak_bytes"] <= ck["peak_bytes"], (role, got)
        assert got["plan"] and got["budget_bytes"] == ck["peak_bytes"]
    assert "tune_picked" in got and got["tune_s"] >= 0


def test_bench_steady_summary_verdicts():
    import argparse

    bs = _bench_steady()
    rows = []
    for c, m, t in [(1.0, 0.95, 1.05), (1.0, 0.97, 1.02), (1.0, 1.04, 0.9)]:
        for role, x in (("ckpt", c), ("membptt", m), ("tuned", t)):
            rows.append({"k": 8, "role": role, "median_s": x, "ratio_to_ckpt": x / c,
                         "peak_bytes": 100 if role == "ckpt" else 99, "plan": "p"})
    out = bs.summary(rows, argparse.Namespace(ks=[8], roles=["ckpt", "membptt", "tuned"]))
    lines = out.splitlines()
    assert "0.970" in lines[2] and lines[2].endswith("MET")  # median of 0.95, 0.97, 1.04
    assert "1.020" in lines[3] and lines[3].endswith("NOT MET")
