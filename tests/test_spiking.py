"""Spiking networks (membptt.models.spiking): exact gradients under every strategy.

float64 throughout the exactness tests: a plan's gradients must equal plain autograd's up to
1e-10 relative, with LIF and adaptive-LIF neurons, reset by subtraction (with and without
gradient through the reset) and the surrogate's custom autograd.Function recomputed from
stored states. The snntorch recipe of docs/spiking.md is tested when snntorch is installed.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import membptt
from membptt.execution import ExecStats, bptt, plain_bptt
from membptt.execution.memtrack import LiveBytesTracker
from membptt.measure.workload import WorkloadConfig, make_workload
from membptt.models.registry import get_model
from membptt.models.spiking import SpikingNetwork, SurrogateSpike, rate_coded_task, spike
from membptt.planning import STRATEGIES, plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

B, IN, H, C = 4, 12, 16, 5


def make(neuron="lif", T=40, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    model = SpikingNetwork(IN, H, C, neuron=neuron, **kw).to(dtype)
    # stronger input weights than nn.Linear's default: many spikes and resets in both layers
    with torch.no_grad():
        for layer in model.layers:
            layer.fc.weight.mul_(4.0)
    x, y = rate_coded_task(T, B, IN, C, max_rate=0.5, seed=seed, dtype=dtype)
    return model, model.initial_state(B), (x, y)


def reference(model, s0, inputs):
    model.zero_grad(set_to_none=True)
    loss, _ = plain_bptt(model, s0, inputs)
    loss.backward()
    g = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss.detach(), g


def run(model, s0, inputs, p, **kw):
    model.zero_grad(set_to_none=True)
    loss = bptt(model, s0, inputs, p, **kw)
    loss.backward()
    g = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss.detach(), g


def max_rel_err(a, b):
    return max(((x - y).abs().max() / y.abs().max().clamp_min(1e-300)).item()
               for x, y in zip(a, b))


def spike_counts(model, s0, inputs):
    """Spikes per layer over the sequence (forward only)."""
    counts = [0] * len(model.layers)
    state = s0
    with torch.no_grad():
        for x in inputs[0]:
            s = x
            new = {}
            for i, layer in enumerate(model.layers, 1):
                s, new[f"mem{i}"], a = layer(s, state[f"mem{i}"], state.get(f"adapt{i}"))
                if a is not None:
                    new[f"adapt{i}"] = a
                counts[i - 1] += int(s.sum())
            new.update({k: v for k, v in state.items() if k not in new})
            state = new
    return counts


def budgets(name, T, alpha):
    s = STRATEGIES[name]
    lo = s.min_memory(T, alpha, None)
    out = [lo, lo + 3]
    return [None] + out[1:] if not s.needs_memory else out


@pytest.mark.parametrize("neuron", ["lif", "alif"])
def test_every_strategy_matches_plain_autograd(neuron):
    """Every registered strategy, two budgets each, stepped and with the graph-free
    ``advance``: float64 gradients within 1e-10 of plain autograd, with spikes (and so resets
    by subtraction) in every layer and the surrogate's Function rerun by recomputation."""
    T = 30
    model, s0, inputs = make(neuron, T)
    assert min(spike_counts(model, s0, inputs)) > 20  # resets happen in every layer
    ref_loss, ref_g = reference(model, s0, inputs)
    alpha = 3
    calls = {"n": 0}
    orig = SurrogateSpike.forward

    def counted(ctx, x, slope, kind):
        calls["n"] += 1
        return orig(ctx, x, slope, kind)

    for name in STRATEGIES:
        for mem in budgets(name, T, alpha):
            p = plan(name, T, mem, alpha=alpha)
            for fused in (True, False):
                st = ExecStats()
                SurrogateSpike.forward = staticmethod(counted)
                calls["n"] = 0
                try:
                    loss, g = run(model, s0, inputs, p, fused=fused, stats=st)
                finally:
                    SurrogateSpike.forward = staticmethod(orig)
                err = max_rel_err(g, ref_g)
                assert err <= 1e-10, (neuron, name, mem, fused, err)
                assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss), (name, mem, fused)
                assert st.backward_steps == T and st.forward_steps == p.forward_ops
                if not fused:
                    assert st.fused_steps == 0
                elif p.forward_ops > st.graph_steps:
                    assert st.fused_steps > 0  # the graph-free advance ran
                # every graph forward rebuilt the surrogate's backward: one Function call per
                # layer and per step evaluated (graph-free runs included)
                assert calls["n"] == len(model.layers) * p.forward_ops, (name, mem, fused)


@pytest.mark.parametrize("kw", [dict(detach_reset=True), dict(surrogate="atan", slope=2.0),
                                dict(readout="linear", layers=3)])
def test_variants_exact_under_recomputation(kw):
    T = 25
    model, s0, inputs = make("alif", T, **kw)
    _, ref_g = reference(model, s0, inputs)
    for name, mem in (("msm", 6), ("hsm", 3), ("recompute-all", None)):
        p = plan(name, T, mem, alpha=3)
        _, g = run(model, s0, inputs, p)
        assert max_rel_err(g, ref_g) <= 1e-10, (kw, name)


def test_probed_plan_exact_and_inside_its_byte_budget():
    """The registry model as a user runs it: probe, plan at a byte budget (20 % of plain's
    measured live-bytes peak), run: gradients exact and measured peak <= the budget."""
    T = 300
    model, s0, inputs = make("lif", T)
    model.zero_grad(set_to_none=True)
    with LiveBytesTracker() as tr:
        loss, _ = plain_bptt(model, s0, inputs)
        loss.backward()
    plain_peak = tr.peak_bytes
    ref_g = [p.grad.clone() for p in model.parameters()]
    costs = membptt.probe(model, s0, inputs)
    budget = int(0.2 * plain_peak)
    p = membptt.plan("msm", T, f"{budget}B", costs=costs)
    model.zero_grad(set_to_none=True)
    with LiveBytesTracker() as tr:
        loss = bptt(model, s0, inputs, p)
        loss.backward()
    assert tr.peak_bytes <= budget, (tr.peak_bytes, budget)
    assert max_rel_err([q.grad for q in model.parameters()], ref_g) <= 1e-10
    # the block planner (what bench_snn.py falls back to at T = 5000): exact, inside too
    p = membptt.plan("msm", T, f"{budget}B", costs=costs, planner="blocks", block=4)
    model.zero_grad(set_to_none=True)
    with LiveBytesTracker() as tr:
        loss = bptt(model, s0, inputs, p)
        loss.backward()
    assert p.block == 4 and tr.peak_bytes <= budget, (tr.peak_bytes, budget)
    assert max_rel_err([q.grad for q in model.parameters()], ref_g) <= 1e-10


def test_surrogate_backward_is_the_documented_derivative():
    x = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    for kind, slope, d in (("fast_sigmoid", 25.0, lambda v: 1 / (1 + 25.0 * v.abs()) ** 2),
                           ("atan", 2.0, lambda v: 1.0 / (1 + (math.pi * v) ** 2))):
        s = spike(x, slope, kind)
        assert torch.equal(s, (x > 0).double())
        (g,) = torch.autograd.grad(s.sum(), x)
        assert torch.allclose(g, d(x.detach()), rtol=1e-14, atol=0)


def test_float32_spikes_drive_a_float64_model():
    model, s0, (x, y) = make("lif", 10)
    a, _ = plain_bptt(model, s0, (x, y))
    b, _ = plain_bptt(model, s0, (x.float(), y))
    assert a.dtype == torch.float64 and torch.equal(a, b)


def test_rate_coded_task_is_deterministic_and_rate_coded():
    x, y = rate_coded_task(2000, 3, 8, 4, max_rate=0.3, seed=5)
    x2, y2 = rate_coded_task(2000, 3, 8, 4, max_rate=0.3, seed=5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (2000, 3, 8) and y.shape == (2000, 3) and x.dtype == torch.float32
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert (y == y[0]).all()  # one label per sequence
    assert 0.0 < x.mean() < 0.3


@pytest.mark.parametrize("call,match", [
    (lambda: SpikingNetwork(4, 4, 3, neuron="izh"), r"neuron must be one of lif, alif, got 'izh'"),
    (lambda: SpikingNetwork(4, 4, 3, readout="rate"), r"readout must be one of leaky, linear"),
    (lambda: SpikingNetwork(4, 4, 3, beta=1.5), r"beta must be a number in \[0, 1\], got 1.5"),
    (lambda: SpikingNetwork(4, 4, 3, surrogate="sig"), r"surrogate must be one of fast_sigmoid"),
    (lambda: SpikingNetwork(4, 4, 1), r"classes must be an integer >= 2, got 1"),
    (lambda: SpikingNetwork(4, 4, 3, threshold=0), r"threshold must be a finite number > 0"),
    (lambda: rate_coded_task(5, 2, 3, 4, max_rate=0), r"max_rate must be a probability"),
    (lambda: rate_coded_task(0, 2, 3, 4), r"seq_len must be an integer >= 1, got 0"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_registry_entries_build_the_workload():
    for name, neuron in (("snn-lif", "lif"), ("snn-alif", "alif")):
        assert get_model(name).data is not None
        w = make_workload(WorkloadConfig(seq_len=7, model=name, hidden=8, input_size=6,
                                         classes=3, batch=2, dtype="float64"))
        assert w.model.neuron == neuron and w.model.readout.weight.dtype == torch.float64
        x, y = w.inputs
        assert x.shape == (7, 2, 6) and x.dtype == torch.float64 and y.shape == (7, 2)
        assert sorted(w.state0) == (["adapt1", "adapt2"] if neuron == "alif" else []) + [
            "mem1", "mem2", "out"]


def test_membptt_bench_runs_the_spiking_model(tmp_path, capsys):
    from membptt.measure.cli import main

    out = tmp_path / "snn.csv"
    rc = main(["--model", "snn-alif", "--method", "full,msm,torch-checkpoint", "--seq-len", "60",
               "--memory", "20%", "--hidden", "16", "--input-size", "8", "--classes", "4",
               "--batch", "2", "--dtype", "float64", "--repeats", "1", "--no-rss", "-q",
               "--out", str(out)])
    assert rc == 0
    import csv

    rows = list(csv.DictReader(out.open()))
    assert [r["method"] for r in rows] == ["full", "msm", "torch-checkpoint"]
    assert all(r["status"] == "ok" for r in rows)
    assert all(float(r["grad_error"]) <= 1e-10 for r in rows[1:])


# -- snntorch (optional extra `snn`): the recipe of docs/spiking.md --------------------------------

def _snntorch_step(snn, dtype):
    class TwoLeaky(nn.Module):
        """The recipe: init_hidden=False, the membranes in `state`, spikes cast to the dtype."""

        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(IN, H), nn.Linear(H, H)
            self.lif1 = snn.Leaky(beta=0.9)  # init_hidden=False (the default)
            self.lif2 = snn.Leaky(beta=0.9)
            self.head = nn.Linear(H, C)

        def forward(self, state, x_t):
            x, y = x_t
            spk1, mem1 = self.lif1(self.fc1(x), state["mem1"])
            spk1 = spk1.to(mem1.dtype)  # snntorch's spikes are float32 whatever the dtype
            spk2, mem2 = self.lif2(self.fc2(spk1), state["mem2"])
            count = state["count"] + spk2.to(mem2.dtype)
            loss = nn.functional.cross_entropy(self.head(count), y, reduction="sum")
            return {"mem1": mem1, "mem2": mem2, "count": count}, loss

    torch.manual_seed(0)
    step = TwoLeaky().to(dtype)
    with torch.no_grad():
        step.fc1.weight.mul_(4.0)
        step.fc2.weight.mul_(4.0)
    return step


def test_snntorch_recipe_exact_under_every_dp_strategy():
    snn = pytest.importorskip("snntorch")
    T = 30
    step = _snntorch_step(snn, torch.float64)
    x, y = rate_coded_task(T, B, IN, C, max_rate=0.5, dtype=torch.float64)
    z = torch.zeros(B, H, dtype=torch.float64)
    s0 = {"mem1": z, "mem2": z.clone(), "count": z.clone()}
    _, ref_g = reference(step, s0, (x, y))
    for name, mem in (("hsm", 4), ("ism", 9), ("msm", 6), ("chen", None)):
        p = plan(name, T, mem, alpha=3)
        _, g = run(step, s0, (x, y), p)
        assert max_rel_err(g, ref_g) <= 1e-10, name
    costs = membptt.probe(step, s0, (x, y))  # the probe accepts it (no state of its own)
    _, g = run(step, s0, (x, y), membptt.plan("msm", T, "30%", costs=costs))
    assert max_rel_err(g, ref_g) <= 1e-10


def test_snntorch_init_hidden_is_refused_naming_the_fix():
    snn = pytest.importorskip("snntorch")
    from membptt.execution import ProtocolError

    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(IN, H).double()
            self.lif = snn.Leaky(beta=0.9, init_hidden=True)

        def forward(self, state, x_t):
            x, y = x_t
            spk = self.lif(self.fc(x))
            return state, spk.sum()

    x, y = rate_coded_task(8, B, IN, C, dtype=torch.float64)
    with pytest.raises(ProtocolError, match=r"keeps state of its own outside `state`.*"
                       r"init_hidden=False.*spk, mem = lif\(cur, mem\).*returning mem in the "
                       r"new state"):
        membptt.probe(Hidden(), torch.zeros(B, H, dtype=torch.float64), (x, y))
