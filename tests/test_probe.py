"""membptt.execution.probe: measured sizes and times, as a planner cost model."""

import pytest
import torch

from membptt.execution import measure_step, probe
from membptt.models import GRULanguageModel, LSTMLanguageModel, synthetic_task
from membptt.planning import CostModel, plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def setup(cls=LSTMLanguageModel, dtype=torch.float32, B=4, H=8, V=5, T=12, **kw):
    torch.manual_seed(0)
    model = cls(V, H, V, **kw).to(dtype)
    x, y = synthetic_task(T, B, V, dense=True, dtype=dtype)
    return model, model.initial_state(B), (x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lstm_sizes(dtype):
    B, H = 4, 8
    model, s0, inputs = setup(dtype=dtype, B=B, H=H)
    rep = measure_step(model, s0, inputs, repeats=2, chain=4)
    e = torch.tensor([], dtype=dtype).element_size()
    assert rep.hidden_bytes == 2 * B * H * e  # (h, c)
    # autograd keeps, for an LSTMCell step: i, f, g, o, tanh(c'), h', c' and the inputs h, c
    # (7 + 2 = 9 B*H blocks), plus the head's log-softmax (B*V) and a few scalars
    assert 9 * B * H * e <= rep.internal_bytes <= 9 * B * H * e + B * 5 * e + 64
    assert rep.beta_bytes == rep.internal_bytes - rep.hidden_bytes
    assert 4 < rep.alpha < 5.5 and rep.beta == pytest.approx(rep.alpha - 1)
    assert rep.working_bytes > rep.internal_bytes
    c = rep.costs
    assert isinstance(c, CostModel)
    assert (c.hidden_bytes, c.internal_bytes, c.beta_bytes) == (
        rep.hidden_bytes, rep.internal_bytes, rep.beta_bytes)
    assert c.forward_graph > 0 and c.backward > 0 and c.run_per_step > 0 and c.run_fixed >= 0
    assert rep.fused


def test_gru_sizes_and_dropout_disables_fusion():
    model, s0, inputs = setup(GRULanguageModel, dropout=0.2)
    rep = measure_step(model, s0, inputs, repeats=1, chain=4)
    assert rep.hidden_bytes == 4 * 8 * 4 and not rep.fused
    assert rep.internal_bytes > rep.beta_bytes > rep.hidden_bytes


def test_probe_has_no_side_effects():
    model, s0, inputs = setup(dropout=0.3)
    model(s0, (inputs[0][0], inputs[1][0]))[1].backward()
    before = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    probe(model, s0, inputs, repeats=1, chain=4)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))
    assert torch.equal(rng, torch.get_rng_state())
    model.zero_grad(set_to_none=True)
    probe(model, s0, inputs, repeats=1, chain=4)
    assert all(p.grad is None for p in model.parameters())


def test_plans_resolve_budgets_against_probed_sizes():
    model, s0, inputs = setup(T=40)
    c = probe(model, s0, inputs, repeats=1, chain=4, segments=False)
    assert c.segments is None and c.working_bytes > 0
    # a percentage is of stepped BPTT's bytes (T internal states + the working set) and bounds
    # the stored states plus the working set
    p = plan("msm", 40, "50%", costs=c)
    assert p.predicted_peak_bytes <= 0.50 * (40 * c.internal_bytes + c.working_bytes)
    assert p.alpha == -(-c.internal_bytes // c.hidden_bytes)
    q = plan("hsm", 40, f"{8 * c.hidden_bytes + c.working_bytes}B", costs=c)
    assert q.peak_bytes <= 8 * c.hidden_bytes
    assert q.predicted_peak_bytes <= 8 * c.hidden_bytes + c.working_bytes


def test_fused_runs_are_priced_per_run():
    model, s0, inputs = setup(T=20, H=16)
    loop = measure_step(model, s0, inputs, fused=False, repeats=3, chain=8, sizes=False)
    fused = measure_step(model, s0, inputs, fused=True, repeats=3, chain=8, sizes=False)
    assert not loop.fused and fused.fused
    assert loop.costs.hidden_bytes is None and loop.costs.internal_bytes is None
    # a fused run pays a launch cost; a Python loop has (close to) none
    assert fused.costs.run_fixed > 0


def test_bad_arguments():
    model, s0, inputs = setup(T=1)
    with pytest.raises(ValueError, match="at least 3 time steps, got 1"):
        probe(model, s0, inputs)
    model, s0, inputs = setup()
    with pytest.raises(ValueError, match="repeats must be an integer >= 1, got 0"):
        probe(model, s0, inputs, repeats=0)
    # (issue 11) chain=1 is blamed on chain, not on the inputs
    with pytest.raises(ValueError, match="chain must be an integer >= 2, got 1"):
        probe(model, s0, inputs, chain=1)
