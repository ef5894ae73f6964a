"""The baselines users pick, any model, one-entry extension: gradients against plain `full`."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from membptt.measure import METHODS, WorkloadConfig, grad_error, make_workload
from membptt.measure.bench import BenchConfig, run_point
from membptt.measure.methods import (
    Infeasible,
    Method,
    TorchCheckpoint,
    make_method,
    parse_method_spec,
)
from membptt.models.registry import MODELS, ModelEntry, get_model, register_model

CHECKPOINTS = ["torch-checkpoint", "torch-checkpoint-reentrant", "torch-checkpoint-fused",
               "torch-checkpoint-fused-reentrant"]


def _ref(w):
    m = METHODS["full"](w, {})
    m.prepare()
    w.zero_grad()
    loss = m.run().item()
    return loss, w.grads()


@pytest.fixture(scope="module", params=["lstm", "gru"])
def model_ref(request):
    w = make_workload(WorkloadConfig(model=request.param, seq_len=23, hidden=12, batch=3,
                                     input_size=7, classes=5, dtype="float64", seed=3))
    return w, _ref(w)


@pytest.mark.parametrize("spec", ["full-fused", *CHECKPOINTS,
                                  "torch-checkpoint-fused:segments=1",
                                  "torch-checkpoint-fused-reentrant:segments=23",
                                  "torch-checkpoint-reentrant:segments=2", "msm:memory=min"])
def test_baselines_match_full_on_every_model(model_ref, spec):
    w, (loss0, g0) = model_ref
    m = make_method(spec, w)
    m.prepare()
    w.zero_grad()
    loss = m.run()
    assert loss.item() == pytest.approx(loss0, rel=1e-12)
    err = grad_error(w.grads(), g0)
    assert err <= 1e-10, (spec, err)
    # every parameter got a gradient (reentrant mode silently drops them without an input
    # that requires grad: the first segment's state copy prevents that)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in w.parameters())


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_checkpoint_segments_and_recomputation_count(model_ref, name):
    w, _ = model_ref
    m = make_method(name + ":segments=4", w)
    m.prepare()
    assert m.segments == [5, 6, 6, 6]
    w.zero_grad()
    m.run()
    info = m.info()
    assert info["forward_ops"] == 2 * 23  # first sweep + one recomputation of every segment
    assert "segments=4" in info["params"]
    assert f"reentrant={str(METHODS[name].reentrant).lower()}" in info["params"]


def test_fused_checkpoint_holds_less_than_full_fused():
    """K segments keep K states and one segment's activations, not T steps' activations."""
    from membptt.measure import tracked_peak

    w = make_workload(WorkloadConfig(seq_len=64, hidden=32, batch=8, input_size=16,
                                     classes=16))
    peaks = {}
    for spec in ["full-fused", "torch-checkpoint-fused:segments=8",
                 "torch-checkpoint-fused-reentrant:segments=8"]:
        m = make_method(spec, w)
        m.prepare()
        w.zero_grad()
        peaks[spec] = tracked_peak(m.run)[0]
    assert peaks["torch-checkpoint-fused:segments=8"] < 0.5 * peaks["full-fused"], peaks
    assert peaks["torch-checkpoint-fused-reentrant:segments=8"] < 0.5 * peaks["full-fused"]


@pytest.mark.parametrize("spec,msg", [
    ("torch-checkpoint:segments=0", "segments must be an integer from 1"),
    ("torch-checkpoint:segments=24", "segments must be an integer from 1"),
    ("torch-checkpoint:segments=x", "must be an integer"),
    ("torch-checkpoint:color=red", "key one of memory"),
    ("nope", "unknown method 'nope'"),
    ("msm:memory=5%,hsm", "cannot contain ','"),
    ("msm-measured:memory=60%:block=x", "an integer block length >= 1"),
    ("msm-measured:memory=60%:block=auto", "an integer block length >= 1"),
    ("msm-measured:memory=60%:planner=fast", "one of auto, steps, blocks, chains"),
    ("chen-measured:memory=60%:planner=chains",
     "planner 'chains' does not apply to strategy 'chen'"),
    ("msm:memory=60%:block=4", "fused planners price calls by their measured costs"),
])
def test_bad_specs_name_the_bad_value(model_ref, spec, msg):
    w, _ = model_ref
    with pytest.raises(ValueError, match=msg):
        make_method(spec, w).prepare()


def test_parse_method_spec():
    assert parse_method_spec("msm:memory=5%:alpha=3") == ("msm", {"memory": "5%", "alpha": 3.0})
    assert parse_method_spec(" torch-checkpoint-fused:segments=8 ") == (
        "torch-checkpoint-fused", {"segments": 8})
    assert parse_method_spec("msm-measured:memory=5%:block=16") == (
        "msm-measured", {"memory": "5%", "block": 16})
    assert parse_method_spec("msm-measured:memory=5%:planner=blocks")[1]["planner"] == "blocks"


def test_block_option_fixes_the_block_length():
    """``block=k`` plans a measured method on blocks of k steps, ``planner=steps`` at step
    level, ``planner=chains`` with fused chains."""
    w = make_workload(WorkloadConfig(seq_len=40, hidden=16, batch=4, input_size=8, classes=8))
    for opt, planner, block in (("block=4", "blocks", 4), ("planner=steps", "steps", None)):
        m = make_method(f"msm-measured:memory=60%:{opt}", w)
        m.prepare()
        assert (m.info()["planner"], m.info()["block"]) == (planner, block)
    m = make_method("hsm-measured:memory=60%:planner=chains", w)  # membptt.planning.chains
    m.prepare()
    info = m.info()
    assert info["planner"] == "chains" and "chains=" in info["params"]
    assert float(m.run()) > 0


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid models: lstm, gru"):
        make_workload(WorkloadConfig(model="transformer", seq_len=3))
    assert get_model("gru").name == "gru"


# -- extending: a new model is one entry, a new method one class + one registry line -----------

class _NestedRNN(nn.Module):
    """A toy step whose state is a nested structure: {"h": h, "mem": (m,)}."""

    def __init__(self, cfg):
        super().__init__()
        self.embedding = nn.Embedding(cfg.classes, cfg.input_size)
        self.inp = nn.Linear(cfg.input_size, cfg.hidden)
        self.rec = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.head = nn.Linear(cfg.hidden, cfg.classes)
        self.hidden = cfg.hidden

    def initial_state(self, batch):
        z = torch.zeros(batch, self.hidden, dtype=self.head.weight.dtype)
        return {"h": z, "mem": (z.clone(),)}

    def forward(self, state, x_t):
        x, y = x_t
        h = torch.tanh(self.inp(self.embedding(x)) + self.rec(state["h"]) + state["mem"][0])
        m = 0.5 * state["mem"][0] + 0.1 * h
        return {"h": h, "mem": (m,)}, F.cross_entropy(self.head(h), y, reduction="sum")


class _TwoHalves(Method):
    """A toy baseline: the stepped loop's two halves, each with its own backward."""

    name = "two-halves"

    def run(self):
        from membptt.measure.methods import _run_steps, _time_slice

        T = self.w.config.seq_len
        state, first = _run_steps(self.w.step, self.w.state0, _time_slice(self.w.inputs, 0,
                                                                              T // 2))
        _, second = _run_steps(self.w.step, state, _time_slice(self.w.inputs, T // 2, T))
        total = first + second
        total.backward()
        return total.detach()


@pytest.fixture
def toy_registries():
    register_model(ModelEntry("nested-toy", build=_NestedRNN))
    METHODS["two-halves"] = _TwoHalves
    yield
    del MODELS["nested-toy"]
    del METHODS["two-halves"]


def test_new_model_and_method_are_one_entry_each(toy_registries):
    cfg = BenchConfig(methods=["full", "two-halves", "torch-checkpoint:segments=3",
                               "torch-checkpoint-reentrant:segments=3", "full-fused"],
                      workload=WorkloadConfig(model="nested-toy", seq_len=12, hidden=6,
                                              batch=2, input_size=5, classes=4,
                                              dtype="float64"),
                      repeats=2, warmup=0, rss=False)
    rows, code = run_point(cfg, log=lambda *a: None)
    by = {r["label"]: r for r in rows}
    assert code == 0
    for spec in ["two-halves", "torch-checkpoint:segments=3",
                 "torch-checkpoint-reentrant:segments=3"]:
        r = by[spec]
        assert r["status"] == "ok" and r["model"] == "nested-toy", r
        assert r["grad_error"] <= 1e-12 and r["repeats"] == 2 and r["time_median_s"] > 0
    # no fused segment registered: the fused baseline refuses with a reason, not a traceback
    assert by["full-fused"]["status"] == "infeasible"
    assert "model 'nested-toy' has none" in by["full-fused"]["message"]
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelEntry("nested-toy", build=_NestedRNN))


def test_checkpoint_classes_share_one_implementation():
    for name in CHECKPOINTS:
        assert issubclass(METHODS[name], TorchCheckpoint)
    assert {(METHODS[n].fused, METHODS[n].reentrant) for n in CHECKPOINTS} == {
        (False, False), (False, True), (True, False), (True, True)}


# -- reversible models (MacKay et al. 2018): their own backward beside full and MSM ------------

@pytest.mark.parametrize("model", ["rev-gru", "rev-lstm"])
def test_reversible_group_full_reversible_msm_at_its_peak(model):
    """One tiny group: the reversible backward and MSM at the reversible method's measured peak
    give plain autograd's gradients (float32 parameters, float64 fixed-point state)."""
    cfg = BenchConfig(methods=["full", "reversible", "msm:memory=peak(reversible)"],
                      workload=WorkloadConfig(model=model, seq_len=12, hidden=8, batch=8,
                                              input_size=5, classes=4),
                      repeats=1, warmup=0, rss=False)
    rows, code = run_point(cfg, log=lambda *a: None)
    by = {r["label"]: r for r in rows}
    assert code == 0
    assert all(r["status"] == "ok" for r in rows), [(r["label"], r["message"]) for r in rows]
    rev, msm = by["reversible"], by["msm:memory=peak(reversible)"]
    for r in (rev, msm):
        assert r["grad_error"] <= 1e-5, r  # float32 gates; the state is exact float64
        assert r["loss"] == pytest.approx(by["full"]["loss"], rel=1e-6)
    units = 8 * (2 if model == "rev-lstm" else 1)
    assert rev["state_units"] == units
    # the buffer: the information it holds fits in what it allocates (64 bits per int64)
    assert 0 < rev["buffer_bits_optimal"] <= rev["buffer_bits_allocated"]
    assert 0 < rev["buffer_bits_stored"] <= rev["buffer_bits_allocated"]
    assert rev["buffer_bytes"] * 8 == pytest.approx(rev["buffer_bits_allocated"] * 12 * 8 * units)
    # a byte budget bounds the whole measured peak; MSM recomputes to fit it
    assert msm["peak_bytes"] <= rev["peak_bytes"] and msm["forward_ops"] > 12
    assert rev["peak_bytes"] < by["full"]["peak_bytes"]


def test_reversible_method_needs_a_reversible_model():
    w = make_workload(WorkloadConfig(model="gru", seq_len=4, hidden=4, batch=1, input_size=3,
                                     classes=3))
    with pytest.raises(Infeasible, match="model 'gru' has none.*rev-gru, rev-lstm"):
        make_method("reversible", w).prepare()


def test_reversible_state_is_float64_with_float32_parameters():
    w = make_workload(WorkloadConfig(model="rev-lstm", seq_len=4, hidden=6, batch=3,
                                     input_size=3, classes=3))
    assert all(p.dtype == torch.float32 for p in w.parameters())
    h, c = w.state0
    assert h.dtype == c.dtype == torch.float64 and h.shape == c.shape == (3, 6)
    assert get_model("rev-gru").extras["reversible_bptt"] is not None


def test_a_plan_over_the_planning_limits_is_an_infeasible_point(monkeypatch):
    """A measured plan method whose DP the planning limits refuse (``PlanTooLarge``) is an
    infeasible point of the sweep, not an error (a bug) that fails the group's exit code."""
    import membptt.planning.limits as limits

    w = make_workload(WorkloadConfig(seq_len=40, hidden=16, batch=4, input_size=8, classes=8))
    monkeypatch.setattr(limits, "DEFAULT_MAX_DP_WORK", 10)
    m = make_method("hsm-measured:memory=60%:planner=chains", w)
    with pytest.raises(Infeasible, match="max_dp_work"):
        m.prepare()
