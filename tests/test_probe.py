"""membptt.execution.probe: measured sizes and times, as a planner cost model."""

import pytest
import torch

from membptt.execution import measure_step, plain_bptt, probe
from membptt.execution.memtrack import LiveBytesTracker
from membptt.models import GRULanguageModel, LSTMLanguageModel, synthetic_task
from membptt.planning import CostModel, plan
from membptt.planning.budget import reference_bytes, stepped_bptt_bytes

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
    # a percentage is of plain stepped BPTT's measured peak and bounds the stored states plus
    # the working set
    p = plan("msm", 40, "50%", costs=c)
    assert p.predicted_peak_bytes <= 0.50 * stepped_bptt_bytes(40, c)
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


def _plain_peak(model, s0, inputs, n):
    """Plain stepped BPTT's live-bytes peak over the first n steps (gradients counted)."""
    model.zero_grad(set_to_none=True)
    with LiveBytesTracker() as mt:
        loss, _ = plain_bptt(model, s0, tuple(t[:n] for t in inputs))
        loss.backward()
        del loss
    model.zero_grad(set_to_none=True)
    return mt.peak_bytes


@pytest.mark.parametrize("cls", [LSTMLanguageModel, GRULanguageModel])
def test_percentages_are_of_plain_bptts_measured_peak(cls):
    """The probe measures plain stepped BPTT's peak at 8 and 32 steps; a percentage budget is
    of that peak at T (affine in T), within 1 % of plain BPTT measured at T itself."""
    T = 120
    model, s0, inputs = setup(cls=cls, T=T, H=16)
    c = probe(model, s0, inputs, repeats=1, chain=4, segment_lengths=(1, 2, 4))
    assert [n for n, _ in c.stepped_peaks] == [8, 32]
    for n, b in c.stepped_peaks:  # the same up to a few loss scalars
        assert abs(b - _plain_peak(model, s0, inputs, n)) <= 64
    measured = _plain_peak(model, s0, inputs, T)
    ref, note = reference_bytes(T, c, "stepped")
    assert abs(ref - measured) <= 0.01 * measured
    assert "measured peak" in note and "8 and 32 steps" in note
    assert reference_bytes(32, c, "stepped")[0] == c.stepped_peaks[1][1]
    p = plan("msm", T, "60%", costs=c)
    assert "plain stepped BPTT's measured peak" in p.budget.note
    assert p.predicted_peak_bytes <= 0.60 * ref
    # a refusal states its minimum as a percentage of the same measured base
    with pytest.raises(ValueError, match=r"% of plain stepped BPTT's measured peak"):
        plan("msm", T, "0.01%", costs=c)
    # short sequences: the two lengths fit in T
    model, s0, inputs = setup(cls=cls, T=5)
    c = probe(model, s0, inputs, repeats=1, chain=2, segments=False)
    assert [n for n, _ in c.stepped_peaks] == [2, 5]


def test_stepped_peaks_are_checked_and_round_trip():
    c = CostModel(hidden_bytes=8, internal_bytes=32, stepped_peaks=[[8, 800], [32, 3200]])
    assert c.stepped_peaks == ((8, 800), (32, 3200))
    assert CostModel(**c.to_dict()) == c
    assert stepped_bptt_bytes(100, c) == 10000 and stepped_bptt_bytes(20, c) == 2000
    for bad in ([(8, 800)], [(32, 800), (8, 3200)], [(8, 0), (32, 10)], [(8, 1.5), (32, 9)],
                "8,800", [(8,), (32, 3)]):
        with pytest.raises(ValueError, match="stepped_peaks must be two or more"):
            CostModel(stepped_peaks=bad)


def test_monotone_pools_noise_dips():
    from membptt.execution.probe import monotone

    assert monotone([1.0, 2.0, 3.0]) == [1.0, 2.0, 3.0]
    assert monotone([3.0, 1.0, 2.0]) == [2.0, 2.0, 2.0]
    assert monotone([371.0, 594.0, 498.0, 482.0, 502.0, 525.0]) == pytest.approx(
        [371.0, 519.0, 519.0, 519.0, 519.0, 525.0])
    out = monotone([5.0, 4.0, 6.0, 1.0, 9.0])
    assert all(a <= b for a, b in zip(out, out[1:]))
    assert sum(out) == pytest.approx(25.0)  # pooling keeps the total


def test_inverted_medians_are_timed_again():
    """A shorter call whose median is above a longer one's by more than the tolerance names
    both (the probe times them again before pooling); within it, nothing."""
    from membptt.execution.probe import RETIME_TOLERANCE, inverted

    lengths = (1, 8, 63, 125)
    samples = {1: [1.0, 1.1, 0.9], 8: [3.0, 3.2, 2.9], 63: [56.0, 57.0, 20.0],
               125: [50.0, 54.0, 52.0]}
    assert inverted(lengths, samples) == []  # 56 vs 52: within 10 %
    samples[63] = [60.0, 61.0, 20.0]  # 60 > 1.1 * 52
    assert inverted(lengths, samples) == [63, 125]
    assert inverted(lengths, samples, tolerance=0.2) == []
    assert RETIME_TOLERANCE == 0.10


def test_probed_call_times_never_fall_with_length():
    model, s0, inputs = setup(T=40, H=16)
    seg = probe(model, s0, inputs, repeats=2, chain=4, segment_lengths=(1, 2, 4, 8, 16)).segments
    for name in ("forward", "backward"):
        v = getattr(seg, name)
        assert all(a <= b for a, b in zip(v, v[1:])), (name, v)
    assert all(a <= b for a, b in zip(seg.run_seconds, seg.run_seconds[1:]))


def test_timing_rounds_run_at_least_min_seconds():
    import time

    from membptt.execution.probe import MAX_ROUNDS, _rounds

    assert list(_rounds(3, 0.0)) == [0, 1, 2]
    t0 = time.perf_counter()
    n = sum(1 for _ in _rounds(1, 0.05) if time.sleep(0.01) is None)
    assert 2 <= n <= 10 and time.perf_counter() - t0 >= 0.05  # rounds until 0.05 s passed
    assert len(list(_rounds(1, 60.0))) == MAX_ROUNDS  # never more than MAX_ROUNDS
    model, s0, inputs = setup()
    with pytest.raises(ValueError, match="min_seconds must be a finite number"):
        measure_step(model, s0, inputs, min_seconds=-1)
