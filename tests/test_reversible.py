"""Reversible RNNs: exact fixed-point arithmetic, bit-exact reconstruction, gradient parity."""

import pytest
import torch

import membptt
from membptt.models.fixedpoint import (
    FORGET_RADIX,
    InfoBuffer,
    div_pop,
    from_fixed,
    min_gate_int,
    mul_push,
    to_fixed,
)
from membptt.models.reversible import (
    ReversibleStats,
    buffer_bits_per_unit_step,
    full_cache_bptt,
    make_reversible_lm,
    reversible_bptt,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAPER_MAX_FORGET = (0.75, 0.875, 0.96875, 1.0)     # 2, 3, 5 bits per step, and no limit
CELLS = ("gru", "lstm")


def _model(cell, *, hidden=6, inp=3, vocab=7, seed=0, dtype=torch.float64, scale=1.0, **kw):
    torch.manual_seed(seed)
    m = make_reversible_lm(cell, inp, hidden, vocab, **kw).to(dtype)
    with torch.no_grad():
        for p in m.cell.parameters():     # larger weights: gates spread over their whole range
            p.mul_(scale)
    return m


def _data(T, B, inp, vocab, *, dtype=torch.float64, seed=1, embed=False):
    g = torch.Generator().manual_seed(seed)
    xs = (torch.randint(0, vocab, (T, B), generator=g) if embed
          else 2 * torch.randn(T, B, inp, generator=g, dtype=dtype))
    return xs, torch.randint(0, vocab, (T, B), generator=g)


def _state0(m, B, seed=2):
    g = torch.Generator().manual_seed(seed)
    s = [from_fixed(to_fixed(0.5 * torch.randn(B, m.hidden_size, generator=g,
                                               dtype=torch.float64)))
         for _ in range(m.cell.n_quantities)]
    return s[0] if len(s) == 1 else tuple(s)


def _flat(state):
    return torch.cat(state, 1) if isinstance(state, tuple) else state


# -- fixed-point primitives -------------------------------------------------------------------

@pytest.mark.parametrize("max_forget", PAPER_MAX_FORGET)
def test_mul_push_div_pop_roundtrip_exact(max_forget):
    g = torch.Generator().manual_seed(3)
    zmin = min_gate_int(max_forget)
    n_max = -(-(1 << FORGET_RADIX) // zmin)
    h0 = torch.randint(-(1 << 30), 1 << 30, (4, 16), generator=g)
    zs = torch.randint(zmin, (1 << FORGET_RADIX) + 1, (200, 4, 16), generator=g)
    buf = InfoBuffer((4, 16), n_max)
    hs, h = [h0], h0
    for z in zs:
        m = mul_push(h, z, buf)
        # the result is the plain floor of h * z / 2**10: a function of (h, z) only
        assert torch.equal(m, torch.div(h * z, 1 << FORGET_RADIX, rounding_mode="floor"))
        h = m
        hs.append(h)
    for t in range(len(zs) - 1, -1, -1):
        h = div_pop(h, zs[t], buf)
        assert torch.equal(h, hs[t])
    assert buf.is_empty()


def test_buffer_overflow_goes_to_stack_and_back():
    # no forgetting limit: gates down to 1/1024, up to 10 bits per push, so chunks fill fast
    g = torch.Generator().manual_seed(4)
    buf = InfoBuffer((3, 5), 1 << FORGET_RADIX)
    ks, ns = [], []
    for _ in range(100):
        n = torch.randint(1, (1 << FORGET_RADIX) + 1, (3, 5), generator=g)
        k = (torch.rand(3, 5, generator=g) * n).long()
        buf.push(k, n)
        ks.append(k)
        ns.append(n)
        assert int(buf.cur.min()) >= 0          # never wrapped around 2**63
    assert len(buf.stack) >= 10                 # ~ 700 bits per unit over 63-bit chunks
    assert buf.nbytes == 8 * 15 * buf.chunks
    for k, n in zip(reversed(ks), reversed(ns)):
        assert torch.equal(buf.pop(n), k)
    assert buf.is_empty()
    with pytest.raises(RuntimeError, match="nothing was pushed"):
        buf.pop(ns[0])


# -- reconstruction -------------------------------------------------------------------------

def _forward_reverse(m, T, B, inp, max_forget):
    xs, _ = _data(T, B, inp, m.vocab_size, dtype=m.head.weight.dtype)
    s = _state0(m, B)
    bufs = m.cell.new_buffers(B, track_optimal=False)
    fwd = [_flat(s)]
    with torch.no_grad():
        for t in range(T):
            s = m.cell.step(xs[t], s, bufs)
            fwd.append(_flat(s))
        for t in range(T - 1, -1, -1):
            s = m.cell.reverse(xs[t], s, bufs)
            assert torch.equal(_flat(s), fwd[t]), f"step {t}"
    assert all(b.is_empty() for b in bufs)
    return bufs


@pytest.mark.slow
@pytest.mark.parametrize("cell,T", [("gru", 10_000), ("lstm", 5_000)])
def test_reconstruction_bit_exact_long(cell, T):
    m = _model(cell, hidden=4, inp=2, scale=3.0, dtype=torch.float32)
    _forward_reverse(m, T, 2, 2, 0.875)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("max_forget", PAPER_MAX_FORGET)
def test_reconstruction_bit_exact_paper_max_forget(cell, max_forget):
    m = _model(cell, hidden=6, inp=3, scale=3.0, max_forget=max_forget)
    _forward_reverse(m, 300, 3, 3, max_forget)


def test_overflow_path_in_model_and_bits():
    m = _model("gru", hidden=6, inp=3, scale=4.0, max_forget=1.0)
    xs, ys = _data(120, 3, 3, 7)
    st = ReversibleStats()
    reversible_bptt(m, _state0(m, 3), (xs, ys), stats=st).backward()
    assert st.chunks > 2                          # two halves, at least one stack push
    m2 = _model("gru", hidden=6, inp=3, scale=4.0, max_forget=0.875)
    bufs = m2.cell.new_buffers(3)
    with torch.no_grad():
        s = _state0(m2, 3)
        for t in range(120):
            s = m2.cell.step(xs[t], s, bufs)
    alloc = buffer_bits_per_unit_step(bufs, 120, 3 * 6)
    stored = buffer_bits_per_unit_step(bufs, 120, 3 * 6, "stored")
    optimal = buffer_bits_per_unit_step(bufs, 120, 3 * 6, "optimal")
    assert 0 < stored <= alloc
    assert 0 < optimal <= 3.0                     # at most 3 bits lost per step at 0.875
    assert stored <= 3.0 + 64 * 2 / 120           # coded bits + less than one bit per chunk


# -- gradients ------------------------------------------------------------------------------

def _grads(m, fn, state0, inputs):
    m.zero_grad()
    s0 = tuple(t.clone().requires_grad_() for t in (state0 if isinstance(state0, tuple)
                                                    else (state0,)))
    xs = inputs[0].clone().requires_grad_() if inputs[0].is_floating_point() else inputs[0]
    loss = fn(s0[0] if len(s0) == 1 else s0, (xs, inputs[1]))
    loss.backward()
    out = [p.grad.clone() for p in m.parameters()] + [s.grad for s in s0]
    if xs.is_floating_point():
        out.append(xs.grad)
    return loss.detach(), out


def _assert_close(a, b, rel=1e-10):
    for x, y in zip(a, b):
        assert x.shape == y.shape
        assert float((x - y).abs().max()) <= rel * max(float(y.abs().max()), 1e-300)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dropout,embed", [(0.0, False), (0.3, True)])
def test_reversible_gradients_equal_plain_autograd(cell, dropout, embed):
    m = _model(cell, hidden=8, inp=4, vocab=9, scale=2.0, dropout=dropout, embed=embed)
    m.train()
    if dropout:
        m.sample_dropout_masks(3, torch.Generator().manual_seed(5))
    inputs = _data(40, 3, 4, 9, embed=embed)
    s0 = _state0(m, 3)
    l_rev, g_rev = _grads(m, lambda s, i: reversible_bptt(m, s, i), s0, inputs)
    l_full, g_full = _grads(m, lambda s, i: full_cache_bptt(m, s, i), s0, inputs)
    assert torch.equal(l_rev, l_full)
    _assert_close(g_rev, g_full)


@pytest.mark.parametrize("cell", CELLS)
def test_msm_plan_equals_plain_autograd(cell):
    T = 30
    m = _model(cell, hidden=6, inp=3, scale=2.0)
    inputs = _data(T, 2, 3, 7)
    s0 = _state0(m, 2)
    p = membptt.plan("msm", T, memory=8, alpha=3)
    l_msm, g_msm = _grads(m, lambda s, i: membptt.bptt(m, s, i, p), s0, inputs)
    l_full, g_full = _grads(m, lambda s, i: full_cache_bptt(m, s, i), s0, inputs)
    assert torch.equal(l_msm, l_full)
    _assert_close(g_msm, g_full)


def test_return_state_gradient_flows_through_final_state():
    m = _model("lstm", hidden=6, inp=3, scale=2.0)
    inputs = _data(15, 2, 3, 7)
    s0 = _state0(m, 2)

    def rev(s, i):
        loss, (h, c) = reversible_bptt(m, s, i, return_state=True)
        return loss + (h * c).sum()

    def full(s, i):
        from membptt.execution.executor import plain_bptt
        loss, (h, c) = plain_bptt(m, s, i)
        return loss + (h * c).sum()

    _, g_rev = _grads(m, rev, s0, inputs)
    _, g_full = _grads(m, full, s0, inputs)
    _assert_close(g_rev, g_full)


def test_parameters_changed_between_forward_and_backward_are_detected():
    m = _model("gru", hidden=6, inp=3, scale=2.0)
    inputs = _data(10, 2, 3, 7)
    loss = reversible_bptt(m, _state0(m, 2), inputs)
    with torch.no_grad():
        m.cell.zr[1].bias.add_(1e-3)            # the backward's gates differ from the forward's
    with pytest.raises(RuntimeError, match="did not end at h_0"):
        loss.backward()


# -- bad arguments --------------------------------------------------------------------------

def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="cell must be one of .* got 'rnn'"):
        make_reversible_lm("rnn", 3, 6, 7)
    with pytest.raises(ValueError, match="hidden_size must be even .* got 5"):
        make_reversible_lm("gru", 3, 5, 7)
    for bad in (0.0, 1.5, "0.8"):
        with pytest.raises(ValueError, match="max_forget must be a number in \\(0, 1\\]"):
            make_reversible_lm("lstm", 3, 6, 7, max_forget=bad)
    with pytest.raises(ValueError, match="dropout must be in \\[0, 1\\), got 1.0"):
        make_reversible_lm("gru", 3, 6, 7, dropout=1.0)
    m = _model("gru", hidden=6, inp=3)
    xs, ys = _data(5, 2, 3, 7)
    with pytest.raises(ValueError, match="float64 .* got torch.float32"):
        reversible_bptt(m, torch.zeros(2, 6), (xs, ys))
    with pytest.raises(ValueError, match="same length >= 1 on dim 0, got 5 and 4"):
        reversible_bptt(m, m.initial_state(2), (xs, ys[:4]))
    with pytest.raises(ValueError, match="batch of inputs \\(2\\) differs from state0's \\(3\\)"):
        reversible_bptt(m, m.initial_state(3), (xs, ys))
    with pytest.raises(ValueError, match="a tuple of 2 tensors"):
        reversible_bptt(_model("lstm"), torch.zeros(2, 6, dtype=torch.float64), (xs, ys))
    with pytest.raises(TypeError, match="must be a ReversibleLanguageModel"):
        reversible_bptt(membptt.models.GRULanguageModel(3, 6, 7), m.initial_state(2), (xs, ys))
    d = _model("gru", hidden=6, inp=3, dropout=0.2).train()
    with pytest.raises(RuntimeError, match="sample_dropout_masks\\(2\\)"):
        full_cache_bptt(d, d.initial_state(2), (xs, ys))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_reversible_gradients_equal_plain_autograd(cell):
    m = _model(cell, hidden=8, inp=4, vocab=9, scale=2.0, dropout=0.3).cuda().train()
    m.sample_dropout_masks(3)
    xs, ys = _data(40, 3, 4, 9)
    s0 = _state0(m, 3)
    s0 = tuple(t.cuda() for t in s0) if isinstance(s0, tuple) else s0.cuda()
    inputs = (xs.cuda(), ys.cuda())
    l_rev, g_rev = _grads(m, lambda s, i: reversible_bptt(m, s, i), s0, inputs)
    l_full, g_full = _grads(m, lambda s, i: full_cache_bptt(m, s, i), s0, inputs)
    assert torch.equal(l_rev, l_full)
    _assert_close(g_rev, g_full)
