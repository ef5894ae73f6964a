"""Planned chunk lengths of graph-free runs (issue 18, item 3): the probe measures one call's
transient by length, the replay splits each run at the longest call the plan's memory admits
and prices those calls, the executor passes that chunk to ``advance``; gradients stay exact and
the measured peak stays inside the predicted one."""

import pytest
import torch
from test_blocks import HB, LENGTHS, RUNS, segments  # the block tests' synthetic fused model

import membptt
from membptt.execution.executor import ExecStats, bptt, plain_bptt
from membptt.models.rnn import LSTMLanguageModel
from membptt.planning import CostModel
from membptt.planning.prices import Prices, run_calls, run_chunk
from membptt.planning.replay import predict


def chunked_costs(**over) -> CostModel:
    """The block tests' synthetic fused model with larger working sets, and graph-free calls
    that have a launch cost (1.0) and a transient of 10 HB per step: the longer a call, the
    cheaper a step."""
    seg = dict(working_bytes=tuple(60 * HB + 20 * HB * L for L in LENGTHS),
               run_bytes=tuple(10 * HB * L for L in RUNS))
    seg.update(over)
    return CostModel(run_fixed=1.0, run_per_step=0.25, forward_graph=3.0, backward=5.0,
                     hidden_bytes=HB, internal_bytes=5 * HB, beta_bytes=4 * HB,
                     working_bytes=80 * HB, segments=segments(**seg))


# -- the split rule and the prices ------------------------------------------------------------

@pytest.mark.parametrize("L,cap,calls", [
    (10, 64, [10]), (64, 64, [64]), (250, 200, [125, 125]), (65, 64, [33, 32]),
    (7, 1, [1] * 7), (1000, 64, [63] * 15 + [55]),
])
def test_runs_split_into_the_fewest_calls_as_even_as_a_fixed_chunk_makes_them(L, cap, calls):
    assert run_calls(L, cap) == calls
    c = run_chunk(L, cap)
    assert c <= cap and sum(run_calls(L, cap)) == L
    # what advance(..., chunk=c) makes: calls of c, then the rest
    assert run_calls(L, cap) == [min(c, L - s) for s in range(0, L, c)]


def test_run_bytes_are_validated_naming_the_bad_value():
    with pytest.raises(ValueError, match="one per run length"):
        chunked_costs(run_bytes=(1, 2))
    with pytest.raises(ValueError, match="2.5"):
        chunked_costs(run_bytes=(1, 2.5, 3, 4))
    with pytest.raises(ValueError, match="-3"):
        chunked_costs(run_bytes=(1, 2, -3, 4))
    back = CostModel(**chunked_costs().to_dict())
    assert back == chunked_costs() and back.segments.chunked


def test_the_cap_is_the_longest_call_whose_measured_transient_fits():
    p = Prices(chunked_costs(), None, None)
    # transients 10, 40, 160, 640 HB at 1, 4, 16, 64 steps; between measured lengths the next
    # one up counts, beyond the longest its per-step rate
    assert p.cap_for(5 * HB) == 1
    assert p.cap_for(39 * HB) == 1
    assert p.cap_for(40 * HB) == 4
    assert p.cap_for(639 * HB) == 16
    assert p.cap_for(640 * HB) == 64
    assert p.cap_for(1280 * HB) == 128
    # the floor: the least core working set (80 HB at one step) less a cursor and a gradient
    assert p.floor_cap() == p.cap_for(78 * HB) == 4
    # a run is priced as its calls: 100 steps at a cap of 16 are 6 calls of 15 and one of 10
    assert run_calls(100, 16) == [15] * 6 + [10]
    s = p._runs.run
    assert p.run(100, 16) == pytest.approx(6 * s(15) + s(10))
    assert p.run(100, 128) == pytest.approx(s(100))
    assert p.run(100, 128) < p.run(100, 16) < p.run(100, 4)
    # without run_bytes runs are priced as the probe timed them (the step's own split)
    q = Prices(chunked_costs(run_bytes=None), None, None)
    assert not q.chunked and q.run(100, 16) == s(100)


def test_the_replay_prices_runs_at_the_plans_own_cap_and_keeps_its_peak():
    """A block plan's runs are priced at the longest call its least core working set admits
    (beside a cursor and a gradient); that is no slower than the floor cap the planners' tables
    use, and the predicted peak is the same (a run's transient fits where a core's did)."""
    costs = chunked_costs()
    T = 64
    for strategy in ("hsm", "msm"):
        p = membptt.plan(strategy, T, f"{400 * HB}B", costs=costs, planner="blocks", block=16)
        own = p.prediction
        floor = predict(p.ops, T, costs, alpha=p.alpha, beta=p.beta,
                        segment_ends=p.segment_ends, own_cap=False)
        prices = Prices(costs, p.alpha, p.beta)
        assert floor.run_cap == prices.floor_cap()
        assert own.run_cap >= floor.run_cap and own.run_cap > prices.floor_cap()
        # the least working set of its cores: one of 16 steps at most, 60 + 20 * 16 HB
        assert own.run_cap <= prices.cap_for((60 + 20 * 16) * HB - 2 * HB)
        assert own.forward_cost < floor.forward_cost
        assert own.backward_cost == floor.backward_cost
        assert own.peak_bytes == floor.peak_bytes <= 400 * HB
    # a chain plan: the DP's table is the floor's, which its assertion checked
    c = membptt.plan("hsm", T, f"{400 * HB}B", costs=costs, planner="chains")
    assert c.info["dp_cost"] == pytest.approx(predict(
        c.ops, T, costs, alpha=c.alpha, beta=c.beta, segment_ends=c.segment_ends,
        own_cap=False).total_cost, rel=1e-9)
    assert c.predicted_cost <= c.info["dp_cost"] + 1e-9


# -- the model and the executor ---------------------------------------------------------------

def _lm(T, dtype=torch.float64, hidden=8):
    torch.manual_seed(0)
    m = LSTMLanguageModel(6, hidden, 5).to(dtype)
    s0 = (torch.zeros(3, hidden, dtype=dtype), torch.zeros(3, hidden, dtype=dtype))
    x = torch.randn(T, 3, 6, dtype=dtype)
    y = torch.randint(0, 5, (T, 3))
    return m, s0, (x, y)


@pytest.mark.parametrize("chunk", [1, 7, 40, 100])
def test_advance_with_a_planned_chunk_equals_the_default_split(chunk):
    m, s0, xs = _lm(40)
    ref_h, ref_loss = m.advance(s0, xs, need_loss=True)
    h, loss = m.advance(s0, xs, need_loss=True, chunk=chunk)
    assert torch.allclose(loss, ref_loss, rtol=1e-12, atol=0)
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-14) for a, b in zip(h, ref_h))
    with pytest.raises(ValueError, match="chunk must be an integer >= 1.*0"):
        m.advance(s0, xs, chunk=0)


def test_segment_is_one_call_in_every_grad_mode():
    """A reentrant checkpoint's first sweep runs ``segment`` under no_grad: one fused call, as
    a user's ``nn.LSTM`` call would be, not the graph-free runs' split."""
    m, s0, xs = _lm(100)
    m.fused_chunk, m.loss_chunk = 8, 4
    calls = []
    fused = m._sync_fused()
    hook = fused.register_forward_hook(lambda mod, i, o: calls.append(i[0].shape[0]))
    try:
        with torch.no_grad():
            h0, l0 = m.segment(s0, xs)
        assert calls == [100]
        h1, l1 = m.segment(s0, xs)
        assert calls == [100, 100]
        m.advance(s0, xs, need_loss=True)
        assert calls[2:] == [8] * 12 + [4]
    finally:
        hook.remove()
    assert torch.allclose(l0, l1.detach(), rtol=1e-12)


def test_planned_chunks_run_as_predicted_with_exact_gradients(monkeypatch):
    """The probe measures single calls' transients for a step whose advance takes ``chunk``;
    the executor splits each run as the plan's prediction says; gradients equal plain
    autograd's (float64)."""
    T = 60
    m, s0, inputs = _lm(T)
    costs = membptt.probe(m, s0, inputs)
    seg = costs.segments
    assert seg.chunked and len(seg.run_bytes) == len(seg.run_lengths)
    assert list(seg.run_bytes) == sorted(seg.run_bytes)
    lo = membptt.min_memory("hsm", T, costs=costs, planner="blocks", block=10).bytes
    p = membptt.plan("hsm", T, f"{2 * lo}B", costs=costs, planner="blocks", block=10)
    cap = p.prediction.run_cap
    assert cap is not None and cap >= Prices(costs, None, None).floor_cap()
    seen = []
    orig = m.advance

    def spy(state, xs, need_loss=False, chunk=None):
        seen.append((xs[0].shape[0], chunk))
        return orig(state, xs, need_loss, chunk=chunk)

    monkeypatch.setattr(m, "advance", spy)

    def grads(fn):
        m.zero_grad()
        fn().backward()
        return [q.grad.clone() for q in m.parameters()]

    ref = grads(lambda: plain_bptt(m, s0, inputs)[0])
    st = ExecStats()
    got = grads(lambda: bptt(m, s0, inputs, p, stats=st))
    assert seen and all(c == run_chunk(n, cap) for n, c in seen)
    assert st.fused_runs == len(seen)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_planned_chunks_stay_inside_the_predicted_peak():
    """Launch-bound sizes: at a budget with room for long calls the runs are longer than the
    step's own split, and the measured peak is inside the predicted one."""
    from membptt.measure.memory import tracked_peak

    torch.manual_seed(0)
    T = 400
    m = LSTMLanguageModel(16, 16, 16)
    s0 = (torch.zeros(2, 16), torch.zeros(2, 16))
    inputs = (torch.randn(T, 2, 16), torch.randint(0, 16, (T, 2)))
    costs = membptt.probe(m, s0, inputs)
    for k in (4, 16, 50):
        p = membptt.plan("hsm", T, f"{10**7}B", costs=costs, planner="blocks", block=T // k)
        cap = p.prediction.run_cap
        assert cap >= max(run_calls(T // k, m.fused_chunk))

        def it(p=p):
            m.zero_grad()
            bptt(m, s0, inputs, p).backward()

        it()
        assert tracked_peak(it)[0] <= p.predicted_peak_bytes
