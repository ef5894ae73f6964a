"""membptt.wrap and membptt.scan: gradients equal plain autograd through the unwrapped module
(float64, <= 1e-10 relative) for losses on all outputs; the forward is the plan's first sweep;
measured live bytes within the plan's prediction plus the caller's tensors; refusals name the
value and what works."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import membptt
from membptt.execution import compiled
from membptt.execution.compile import Run
from membptt.execution.memtrack import LiveBytesTracker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_wrap import ckpt_forward  # noqa: E402  the checkpoint drop-in the benchmark runs

torch.set_num_threads(1)

T, B, D, H = 17, 3, 4, 5
DT = torch.float64


def max_rel_err(got, ref):
    return max(float((g - r).abs().max()) / max(float(r.abs().max()), 1e-300)
               for g, r in zip(got, ref))


def attention(o, att):  # o: (B, T, H)
    a = torch.softmax(o @ att, dim=1)
    return ((a.unsqueeze(-1) * o).sum(1) ** 2).sum()


LOSSES = {
    "attention": lambda o, att: attention(o, att),
    "mean": lambda o, att: (o.mean(1) ** 2 * att).sum(),
    "last": lambda o, att: (o[:, -1] * att).sum() ** 2,
}


def make_hx(cls, L, b, h, seed=1):
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(L, b, h, generator=g, dtype=DT).requires_grad_()
    if cls is nn.LSTM:
        return (h0, torch.randn(L, b, h, generator=g, dtype=DT).requires_grad_())
    return h0


def run(mod, rnn, x, hx, loss_kind, bf, att, lstm):
    for p in rnn.parameters():
        p.grad = None
    x.grad = None
    out, hn = mod(x) if hx is None else mod(x, hx)
    o = out if bf else out.transpose(0, 1)
    h_n = hn[0] if lstm else hn
    loss = LOSSES[loss_kind](o, att) + (h_n ** 2).sum() + (hn[1].sum() if lstm else 0)
    loss.backward()
    hs = () if hx is None else (hx if lstm else (hx,))
    grads = [p.grad.clone() for p in rnn.parameters()] + [x.grad.clone()]
    grads += [t.grad.clone() for t in hs]
    for t in hs:
        t.grad = None
    return loss.detach(), out.detach(), hn, grads


@pytest.mark.parametrize("loss_kind", sorted(LOSSES))
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("bf", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_wrap_gradients_equal_plain_autograd(cls, layers, bf, with_hx, loss_kind):
    torch.manual_seed(0)
    rnn = cls(D, H, num_layers=layers, batch_first=bf).to(DT)
    x = torch.randn((B, T, D) if bf else (T, B, D), dtype=DT, requires_grad=True)
    att = torch.randn(H, dtype=DT)
    hx = make_hx(cls, layers, B, H) if with_hx else None
    lstm = cls is nn.LSTM
    ref = run(rnn, rnn, x, hx, loss_kind, bf, att, lstm)
    w = membptt.wrap(rnn, memory=10, repeats=1)
    got = run(w, rnn, x, hx, loss_kind, bf, att, lstm)
    assert float((got[0] - ref[0]).abs()) <= 1e-10 * float(ref[0].abs())
    assert float((got[1] - ref[1]).abs().max()) <= 1e-12
    assert max_rel_err(got[3], ref[3]) <= 1e-10
    assert got[1].shape == ref[1].shape and got[1].is_contiguous()
    assert w.info["strategy"] == "msm" and w.info["forwards_per_step"] > 1  # it recomputed


@pytest.mark.parametrize("strategy,memory,block", [
    ("msm", 6, None), ("ism", 12, None), ("hsm", 4, None), ("msm", 20, 4), ("full", None, None),
    ("chen", None, None)])
def test_wrap_any_plan_is_exact(strategy, memory, block):
    torch.manual_seed(1)
    rnn = nn.LSTM(D, H, num_layers=2).to(DT)
    x = torch.randn(T, B, D, dtype=DT, requires_grad=True)
    att = torch.randn(H, dtype=DT)
    ref = run(rnn, rnn, x, None, "attention", False, att, True)
    kw = {} if block is None else {"block": block}
    if block is None and strategy in ("msm", "ism", "hsm"):
        kw = {"planner": "steps"}
    w = membptt.wrap(rnn, memory=memory, strategy=strategy, repeats=1, **kw)
    got = run(w, rnn, x, None, "attention", False, att, True)
    assert max_rel_err(got[3], ref[3]) <= 1e-10
    assert w.info["block"] == block


class CountingLSTM(nn.LSTM):
    """Counts the time steps the module is run over, with and without grad."""

    steps = 0

    def forward(self, x, hx=None):
        CountingLSTM.steps += x.shape[1] if self.batch_first else x.shape[0]
        return super().forward(x, hx)


@pytest.mark.parametrize("defer", [True, False])
def test_wrap_forward_is_the_first_sweep(defer):
    """The forward runs each step once (no extra forwards); forward + backward run exactly the
    plan's forward operations (plus, deferring, the first sweep's graph forwards rebuilt when
    the backward starts); fused calls run where the plan has blocks."""
    torch.manual_seed(2)
    rnn = CountingLSTM(D, H).to(DT)
    x = torch.randn(40, B, D, dtype=DT)
    w = membptt.wrap(rnn, memory=12, repeats=1, defer=defer, planner="blocks")
    w(x)[0].sum().backward()  # plans (the probe runs the module too)
    plan = w.info["plan"]
    CountingLSTM.steps = 0
    out, _ = w(x)
    assert CountingLSTM.steps == 40
    (out ** 2).sum().backward()
    assert (w.info["deferred_steps"] > 0) == defer
    assert CountingLSTM.steps == plan.forward_ops + w.info["deferred_steps"]
    assert plan.block is not None and plan.block > 1  # fused blocks were planned


class CallCountingLSTM(nn.LSTM):
    """Counts the module's calls made without grad (graph-free calls)."""

    calls = 0

    def forward(self, x, hx=None):
        if not torch.is_grad_enabled():
            CallCountingLSTM.calls += 1
        return super().forward(x, hx)


@pytest.mark.parametrize("defer", [True, False])
def test_wrap_graph_free_runs_are_planned_calls(defer):
    """With ``chunk=None`` (default) a graph-free run is the fewest calls of at most the
    plan's ``run_cap`` steps (one call per run where the cap exceeds it); an int ``chunk`` is
    a fixed split. Both give plain autograd's gradients; the planned forward makes fewer
    calls."""
    torch.manual_seed(5)
    Tl = 160
    rnn = CallCountingLSTM(D, H).to(DT)
    x = torch.randn(Tl, B, D, dtype=DT, requires_grad=True)
    att = torch.randn(H, dtype=DT)
    ref = run(rnn, rnn, x, None, "attention", False, att, True)
    calls = {}
    for chunk in (None, 8):
        w = membptt.wrap(rnn, memory="1MiB", strategy="hsm", block=40, repeats=1,
                         chunk=chunk, defer=defer)
        got = run(w, rnn, x, None, "attention", False, att, True)  # plans, then runs
        assert max_rel_err(got[3], ref[3]) <= 1e-10
        CallCountingLSTM.calls = 0
        with torch.enable_grad():
            w(x)
        calls[chunk] = CallCountingLSTM.calls
        if chunk is None:
            cap = w.info["run_cap"]  # what the least core (40 steps) leaves room for
            assert cap is not None and cap >= 40
            assert f"graph-free calls of at most {min(cap, Tl)} steps" in w.info["summary"]
    # planned: one call per run between stored bounds (40, 80, 120; the last block rebuilt
    # graph-free when deferring, else run with graph); fixed: 40-step runs in calls of 8
    runs = 4 if defer else 3
    assert calls[None] == runs and calls[8] == runs * 5


def test_wrap_the_twins_gradient_is_a_view_and_exact():
    """The probe twin's ``<ys, w>`` sends ``dL/dys`` without a block of new storage, and
    ``g * w`` for any incoming ``g``."""
    from membptt.execution.wrap import _Dot, _probe_weights

    w = _probe_weights(torch.empty(3, 4), 6)
    ys = torch.randn(6, 3, 4, requires_grad=True)
    seen = []
    y2 = ys * 1  # a non-leaf, as a record's outputs are
    y2.register_hook(lambda g: seen.append(g))
    _Dot.apply(y2, w).backward()
    assert seen[0].data_ptr() == w.data_ptr()  # w itself: no new storage
    assert torch.equal(ys.grad, w)
    ys.grad = None
    _Dot.apply(ys, w).backward()  # a leaf gets a copy (its .grad may be accumulated into)
    assert torch.equal(ys.grad, w) and ys.grad.data_ptr() != w.data_ptr()
    ys.grad = None
    (3.0 * _Dot.apply(ys * 1, w)).backward()
    assert torch.allclose(ys.grad, 3.0 * w)
    with torch.no_grad():
        assert float(_Dot.apply(ys, w)) == pytest.approx(float((ys * w).sum()), rel=1e-6)


@pytest.mark.parametrize("K", [4, 5])
def test_wrap_the_checkpoints_own_schedule_fits_at_its_measured_peak(K):
    """At the recurrence memory of ``torch.utils.checkpoint`` over K chunks of the module
    (outputs concatenated, the drop-in a user writes) plus one scalar, wrap's accounting admits
    the checkpoint's own schedule (K blocks of T / K steps), the module running it holds no more
    than the checkpoint, wrap's own pick there is predicted no slower, and at the checkpoint's
    memory itself wrap's pick is inside the budget as measured. (The twin the probe measures has the outputs mode's working set: its dL/dy is a
    view, it holds no loss scalars, and h_0 = 0 is no state to hold.)"""
    from membptt.measure.memory import tracked_peak

    torch.manual_seed(6)
    Tl, Bl, Hl = 160, 2, 16
    rnn = nn.LSTM(Hl, Hl)
    x = torch.randn(Tl, Bl, Hl)
    G = torch.randn(Tl, Bl, Hl)
    out_bytes = G.numel() * G.element_size()

    def ckpt():
        return ckpt_forward(rnn, x, K)

    def rec(forward):  # the recurrence's memory, as benchmarks/bench_wrap.py measures it
        def it():
            torch.autograd.backward(forward(), G)
        for _ in range(2):
            rnn.zero_grad(set_to_none=True)
            got = tracked_peak(it)[0] - out_bytes
        rnn.zero_grad(set_to_none=True)
        return got

    peer = rec(ckpt)
    budget = f"{peer}B"
    best = membptt.wrap(rnn, memory=budget, repeats=1)
    best_rec = rec(lambda: best(x)[0])
    costs = best.info["costs"]
    # the accounting keeps one loss scalar the outputs mode does not hold (4 B): the own
    # schedule fits at the checkpoint's memory plus that scalar
    own = membptt.wrap(rnn, memory=f"{peer + 4}B", costs=costs, strategy="hsm", block=Tl // K)
    own_rec = rec(lambda: own(x)[0])  # planned: it fits
    spare = membptt.plan("hsm", Tl, "10MiB", costs=costs, block=Tl // K)
    op, bp = own.info["plan"], best.info["plan"]
    assert op.forward_ops == spare.forward_ops  # every bound stored
    assert own_rec <= peer and own_rec <= op.predicted_peak_bytes <= op.budget.bytes
    plus = membptt.wrap(rnn, memory=f"{peer + 4}B", costs=costs)  # the library's pick there
    plus(x)[0].sum().backward()
    assert plus.info["plan"].predicted_cost <= op.predicted_cost
    assert best_rec <= bp.predicted_peak_bytes <= bp.budget.bytes
    assert op.predicted_peak_bytes - own_rec <= 0.01 * own_rec  # tight


@pytest.mark.parametrize("cls,dtype,memory", [(nn.GRU, torch.float32, "81532B"),
                                               (nn.RNN, torch.float32, "40000B"),
                                               (nn.LSTM, torch.float64, "120000B")])
@pytest.mark.parametrize("planner", ["auto", "blocks", "chains"])
def test_wrap_measured_recurrence_within_prediction(cls, dtype, memory, planner):
    """The twin the probe measures holds what the outputs mode holds (its records keep their
    outputs), so the recurrence's measured peak stays within the prediction for modules
    whose backward does not save its output (GRU, RNN, a float64 LSTM on CPU)."""
    from membptt.measure.memory import tracked_peak

    torch.manual_seed(10)
    Tl, Bl, Hl = 160, 2, 16
    rnn = cls(Hl, Hl).to(dtype)
    x = torch.randn(Tl, Bl, Hl, dtype=dtype)
    G = torch.randn(Tl, Bl, Hl, dtype=dtype)
    w = membptt.wrap(rnn, memory=memory, repeats=1, planner=planner)

    def it():
        torch.autograd.backward(w(x)[0], G)

    it()
    rnn.zero_grad(set_to_none=True)
    got = tracked_peak(it)[0] - G.numel() * G.element_size()
    p = w.info["plan"]
    assert got <= p.predicted_peak_bytes <= p.budget.bytes, (got, p.predicted_peak_bytes)


def test_wrap_fixed_chunk_reports_its_calls():
    rnn = nn.LSTM(D, H).to(DT)
    w = membptt.wrap(rnn, memory="1MiB", strategy="hsm", block=40, repeats=1, chunk=8)
    w(torch.randn(160, B, D, dtype=DT))[0].sum().backward()
    assert w.info["run_cap"] == 8 and "graph-free calls of at most 8 steps" in w.info["summary"]


def test_wrap_defer_holds_only_hidden_states_between_forward_and_backward():
    """Deferring, what the forward leaves alive beyond the outputs and the final state is
    hidden-state checkpoints only; without, the first sweep's stored graphs too. Gradients
    are the same either way."""
    torch.manual_seed(8)
    Tl = 80
    rnn = nn.LSTM(D, H).to(DT)
    x = torch.randn(Tl, B, D, dtype=DT)
    state = 2 * B * H * 8  # (h, c)
    held, grads, checkpoints, costs = {}, {}, {}, None
    for defer in (True, False):  # (one probe: the same plan both ways)
        w = membptt.wrap(rnn, memory=30, planner="steps", repeats=1, defer=defer, costs=costs)
        w(x)[0].sum().backward()  # plan once
        costs = w.info["costs"]
        rnn.zero_grad(set_to_none=True)
        with LiveBytesTracker() as tr:
            out, (h, c) = w(x)
            held[defer] = tr.current_bytes - out.numel() * 8 - 2 * h.numel() * 8
            ((out ** 2).sum() + c.sum()).backward()
            del out, h, c
        grads[defer] = [p.grad.clone() for p in rnn.parameters()]
        prog = compiled(w.info["plan"])
        checkpoints[defer] = sum(1 for ins in prog.instructions[:prog.split]
                                 if isinstance(ins, Run) and ins.store)
    assert checkpoints[True] == checkpoints[False]
    assert held[True] <= (checkpoints[True] + 1) * state  # (+1: the deferred group's input)
    assert held[False] > held[True] + 4 * state
    assert max_rel_err(grads[True], grads[False]) <= 1e-12


def test_wrap_live_bytes_within_prediction_plus_callers_tensors():
    torch.manual_seed(3)
    Tl, Bl, Hl = 200, 4, 16
    rnn = nn.LSTM(Hl, Hl).to(DT)
    x = torch.randn(Tl, Bl, Hl, dtype=DT)
    g = torch.randn(Tl, Bl, Hl, dtype=DT)
    w = membptt.wrap(rnn, memory="350KiB", repeats=1)
    w(x)[0].sum().backward()  # plan once
    plan = w.info["plan"]
    for p in rnn.parameters():
        p.grad = None
    out_bytes = Tl * Bl * Hl * 8
    with LiveBytesTracker() as tr:
        out, (h, c) = w(x)
        loss = (out * g).sum()  # the caller's: out and dL/dout (T x B x H each)
        loss.backward()
        del out, h, c, loss
    assert plan.predicted_peak_bytes <= 350 * 1024 and plan.forward_ops > Tl
    assert tr.peak_bytes <= plan.predicted_peak_bytes + 2 * out_bytes + 4096
    assert tr.current_bytes <= sum(p.numel() * 8 for p in rnn.parameters())  # only .grad left


def test_wrap_unbatched_and_no_grad_match_the_module():
    torch.manual_seed(4)
    rnn = nn.GRU(D, H, num_layers=2).to(DT)
    x = torch.randn(T, D, dtype=DT, requires_grad=True)
    w = membptt.wrap(rnn, memory=10, repeats=1)
    out, h = w(x)
    ref_out, ref_h = rnn(x)
    assert out.shape == ref_out.shape and h.shape == ref_h.shape
    (out.sum() + h.sum()).backward()
    gw = [p.grad.clone() for p in rnn.parameters()] + [x.grad.clone()]
    for p in rnn.parameters():
        p.grad = None
    x.grad = None
    (ref_out.sum() + ref_h.sum()).backward()
    assert max_rel_err(gw, [p.grad for p in rnn.parameters()] + [x.grad]) <= 1e-10
    with torch.no_grad():
        a, b = w(x)
        ra, rb = rnn(x)
    assert torch.equal(a, ra) and torch.equal(b, rb)


def test_wrap_output_unused_only_final_state():
    torch.manual_seed(5)
    rnn = nn.LSTM(D, H).to(DT)
    x = torch.randn(T, B, D, dtype=DT)
    w = membptt.wrap(rnn, memory=10, repeats=1)
    _, (h, c) = w(x)
    (h.sum() + (c ** 2).sum()).backward()
    gw = [p.grad.clone() for p in rnn.parameters()]
    for p in rnn.parameters():
        p.grad = None
    _, (h, c) = rnn(x)
    (h.sum() + (c ** 2).sum()).backward()
    assert max_rel_err(gw, [p.grad for p in rnn.parameters()]) <= 1e-10


def test_wrap_refusals_say_why_and_what_works():
    with pytest.raises(ValueError, match=r"bidirectional=True.*two unidirectional modules"):
        membptt.wrap(nn.LSTM(D, H, bidirectional=True), memory=10)
    with pytest.raises(ValueError, match=r"got Linear.*membptt.scan"):
        membptt.wrap(nn.Linear(D, H), memory=10)
    with pytest.raises(ValueError, match=r"needs memory=.*'64MiB'.*strategy 'msm'"):
        membptt.wrap(nn.GRU(D, H), memory=None)
    w = membptt.wrap(nn.LSTM(D, H, num_layers=2).to(DT), memory=10)
    x = torch.randn(T, B, D, dtype=DT)
    with pytest.raises(ValueError, match=r"shapes \(2, 3, 5\) and \(2, 3, 5\).*got \(1, 3, 5\)"):
        w(x, (torch.zeros(1, B, H, dtype=DT), torch.zeros(1, B, H, dtype=DT)))
    with pytest.raises(ValueError, match=r"tuple \(h_0, c_0\)"):
        w(x, torch.zeros(2, B, H, dtype=DT))
    with pytest.raises(ValueError, match=r"input_size=4 .* got shape \(17, 3, 7\)"):
        w(torch.randn(T, B, 7, dtype=DT))
    with pytest.raises(ValueError, match=r"shape \(T, B, input_size\).*got shape \(17,\)"):
        w(torch.randn(T, dtype=DT))
    packed = nn.utils.rnn.pack_padded_sequence(x, [T, T - 1, 3])
    with pytest.raises(ValueError, match=r"PackedSequence.*pad_packed_sequence"):
        w(packed)


def test_wrap_autograd_grad_says_it_is_a_documented_limitation():
    rnn = nn.GRU(D, H).to(DT)
    w = membptt.wrap(rnn, memory=10, repeats=1)
    out, _ = w(torch.randn(T, B, D, dtype=DT))
    with pytest.raises(RuntimeError, match=r"autograd.grad.*documented limitation.*"
                                           r"loss.backward\(\)"):
        torch.autograd.grad(out.sum(), list(rnn.parameters()))


def test_wrap_info_and_repr_say_what_was_picked():
    rnn = nn.LSTM(D, H).to(DT)
    w = membptt.wrap(rnn, memory=10, repeats=1, planner="blocks")
    w(torch.randn(T, B, D, dtype=DT))[0].sum().backward()
    info = w.info
    assert info["seq_len"] == T and info["memory"] == 10 and info["probe_seconds"] > 0
    assert info["plan"].seq_len == T
    assert f"T={T}: msm on blocks of {info['block']} steps" in repr(w)
    assert "the outputs are the caller's" in repr(w)


# -- membptt.scan -------------------------------------------------------------------------------

class Cell(nn.Module):
    """A hand-written cell: state {'h': h, 'n': (m,)}, inputs (x_t, u_t); y_t a nonlinear
    readout of h."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(D + H, H).to(DT)
        self.b = nn.Linear(H, 2).to(DT)

    def forward(self, state, xt):
        x, u = xt
        h = torch.tanh(self.a(torch.cat([x, state["h"]], -1))) * u.unsqueeze(-1)
        m = state["n"][0] * 0.9 + h.sum(-1, keepdim=True)
        return {"h": h, "n": (m,)}, torch.sigmoid(self.b(h)) * m


def plain_scan(step, state, xs):
    ys = []
    for t in range(xs[0].shape[0]):
        state, y = step(state, xs[0][t] if len(xs) == 1 else tuple(v[t] for v in xs))
        ys.append(y)
    return torch.stack(ys), state


@pytest.mark.parametrize("plan_kw", [dict(memory=8), dict(memory=5, strategy="hsm"),
                                     dict(memory=16, strategy="ism")])
def test_scan_gradients_equal_plain_autograd(plan_kw):
    torch.manual_seed(6)
    cell = Cell()
    x = torch.randn(T, B, D, dtype=DT, requires_grad=True)
    u = torch.rand(T, B, dtype=DT) + 0.5
    h0 = torch.randn(B, H, dtype=DT, requires_grad=True)
    m0 = torch.zeros(B, 1, dtype=DT)

    def loss_of(ys, st):
        a = torch.softmax(ys.sum(-1), dim=0)  # attention over time
        return ((a.unsqueeze(-1) * ys).sum(0) ** 2).sum() + (st["h"] ** 2).sum() + st["n"][0].sum()

    def grads(fn):
        for p in (*cell.parameters(), x, h0):
            p.grad = None
        ys, st = fn()
        loss = loss_of(ys, st)
        loss.backward()
        return ys.detach(), [p.grad.clone() for p in (*cell.parameters(), x, h0)]

    ref_y, ref = grads(lambda: plain_scan(cell, {"h": h0, "n": (m0,)}, (x, u)))
    info = {}
    got_y, got = grads(lambda: membptt.scan(cell, {"h": h0, "n": (m0,)}, (x, u), repeats=1,
                                            info=info, **plan_kw))
    assert float((got_y - ref_y).abs().max()) <= 1e-12
    assert max_rel_err(got, ref) <= 1e-10
    assert info["strategy"] == plan_kw.get("strategy", "msm") and info["seq_len"] == T
    assert info["forwards_per_step"] > 1


def test_scan_function_step_with_a_given_plan_and_no_grad():
    torch.manual_seed(7)
    W = torch.randn(H, H, dtype=DT, requires_grad=True)
    x = torch.randn(T, B, H, dtype=DT)

    def step(h, x_t):
        h = torch.tanh(h @ W + x_t)
        return h, h * 2

    p = membptt.plan("msm", T, memory=6, alpha=2)
    h0 = torch.zeros(B, H, dtype=DT)
    ys, hT = membptt.scan(step, h0, x, plan=p)
    (ys.sum() + hT.sum()).backward()
    g = W.grad.clone()
    W.grad = None
    ry, rh = plain_scan(step, h0, (x,))
    (ry.sum() + rh.sum()).backward()
    assert max_rel_err([g], [W.grad]) <= 1e-10
    with torch.no_grad():
        ys2, hT2 = membptt.scan(step, h0, x, plan=p)
    assert torch.allclose(ys2, ry.detach(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"needs memory=.*or plan="):
        membptt.scan(step, h0, x)


def test_scan_counts_the_first_sweep_as_the_forward():
    calls = {"n": 0}
    W = torch.randn(H, H, dtype=DT, requires_grad=True)

    def step(h, x_t):
        calls["n"] += 1
        h = torch.tanh(h @ W + x_t)
        return h, h

    x = torch.randn(30, B, H, dtype=DT)
    p = membptt.plan("msm", 30, memory=5, alpha=2)
    info = {}
    ys, _ = membptt.scan(step, torch.zeros(B, H, dtype=DT), x, plan=p, info=info)
    assert calls["n"] == 30
    ys.sum().backward()
    assert info["deferred_steps"] > 0
    assert calls["n"] == p.forward_ops + info["deferred_steps"]


def test_scan_output_must_keep_its_shape():
    def step(h, x_t):
        return h + x_t, torch.zeros(int(x_t[0, 0].item() > 0) + 1)

    x = torch.ones(6, B, H, dtype=DT)
    x[3] = -1
    p = membptt.plan("full", 6, alpha=1)
    with pytest.raises(ValueError, match=r"step 4: the output y_t changed: expected shape \(2,\)"):
        membptt.scan(step, torch.zeros(B, H, dtype=DT, requires_grad=True), x, plan=p)



def test_wrap_with_dropout_replays_the_masks_of_a_stepped_module():
    """Inter-layer dropout in training: wrap runs the module step by step with RNG replay; its
    outputs and gradients equal the module called one step at a time from the same seed."""
    rnn = nn.LSTM(D, H, num_layers=2, dropout=0.4).to(DT)
    x = torch.randn(T, B, D, dtype=DT)
    att = torch.randn(H, dtype=DT)
    w = membptt.wrap(rnn, memory=8, repeats=1)
    torch.manual_seed(11)
    out, (h, c) = w(x)
    loss = attention(out.transpose(0, 1), att) + (h ** 2).sum()
    loss.backward()
    got = [p.grad.clone() for p in rnn.parameters()]
    assert w.info["block"] is None  # not deterministic: no fused blocks
    rnn.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    hc, outs = None, []
    for t in range(T):
        o, hc = rnn(x[t:t + 1], hc)
        outs.append(o)
    ref_out = torch.cat(outs)
    (attention(ref_out.transpose(0, 1), att) + (hc[0] ** 2).sum()).backward()
    assert float((out - ref_out).detach().abs().max()) <= 1e-12
    assert max_rel_err(got, [p.grad for p in rnn.parameters()]) <= 1e-10


def test_wrap_nn_rnn():
    torch.manual_seed(12)
    rnn = nn.RNN(D, H, num_layers=2, nonlinearity="relu", batch_first=True).to(DT)
    x = torch.randn(B, T, D, dtype=DT)
    att = torch.randn(H, dtype=DT)
    ref = run(rnn, rnn, x.requires_grad_(), None, "mean", True, att, False)
    got = run(membptt.wrap(rnn, memory=8, repeats=1), rnn, x, None, "mean", True, att, False)
    assert max_rel_err(got[3], ref[3]) <= 1e-10


# -- tune=True ----------------------------------------------------------------------------------

def test_wrap_tune_times_candidates_as_calls_and_changes_nothing_else():
    """``tune=True`` times the candidates as forward and backward calls of the module when it
    plans; the forward that plans leaves the parameters' ``.grad``, the input's and the RNG as
    they were, and the call's own backward gives plain autograd's gradients."""
    torch.manual_seed(7)
    rnn = nn.LSTM(D, H).to(DT)
    x = torch.randn(120, B, D, dtype=DT, requires_grad=True)
    att = torch.randn(H, dtype=DT)
    ref = run(rnn, rnn, x, None, "attention", False, att, True)
    w = membptt.wrap(rnn, memory="60%", tune=True, repeats=1)
    marker = [torch.full_like(p, 2.0) for p in rnn.parameters()]
    for p, m in zip(rnn.parameters(), marker):
        p.grad = m
    x.grad = None
    rng = torch.get_rng_state()
    out, (h_n, c_n) = w(x)  # probes, tunes, runs the first sweep
    assert all(p.grad is m and float(m.unique()) == 2.0 for p, m in zip(rnn.parameters(), marker))
    assert x.grad is None and torch.equal(torch.get_rng_state(), rng)
    tn = w.info["tune"]
    assert len(tn["candidates"]) >= 2 and tn["rounds"] >= 3
    picked = [r for r in tn["candidates"] if r["picked"]]
    assert len(picked) == 1 and picked[0]["label"] == tn["picked"]
    assert "tuned: timed" in w.info["summary"]
    got = run(w, rnn, x, None, "attention", False, att, True)
    assert max_rel_err(got[3], ref[3]) <= 1e-10


def test_wrap_tune_keeps_what_is_measured_faster(monkeypatch):
    tune_mod = importlib.import_module("membptt.execution.tune")

    torch.manual_seed(8)
    rnn = nn.LSTM(D, H).to(DT)
    x = torch.randn(120, B, D, dtype=DT)
    seen = []

    def fake(run_one, plans, params, cuda, rounds, min_seconds):
        run_one(plans[-1])  # the runner is a real call
        seen.append(plans)
        return {i: [1.0 - 0.1 * (i == len(plans) - 1)] * rounds for i in range(len(plans))}

    monkeypatch.setattr(tune_mod, "time_plans", fake)
    w = membptt.wrap(rnn, memory="60%", tune=True, repeats=1)
    w(x)[0].sum().backward()
    assert len(seen) == 1 and len(seen[0]) >= 2
    assert w.info["plan"] is seen[0][-1]
    assert w.info["tune"]["picked"] != w.info["tune"]["planner_choice"]
    w(x)[0].sum().backward()  # planned once: the second call reuses the plan
    assert len(seen) == 1


def test_scan_tune_gradients_equal_plain_autograd():
    torch.manual_seed(9)
    cell = Cell()
    x = torch.randn(40, B, D, dtype=DT, requires_grad=True)
    u = torch.rand(40, B, dtype=DT) + 0.5
    h0 = torch.randn(B, H, dtype=DT, requires_grad=True)
    m0 = torch.zeros(B, 1, dtype=DT)

    def grads(fn):
        for p in (*cell.parameters(), x, h0):
            p.grad = None
        ys, st = fn()
        ((ys ** 2).sum() + st["h"].sum()).backward()
        return [p.grad.clone() for p in (*cell.parameters(), x, h0)]

    ref = grads(lambda: plain_scan(cell, {"h": h0, "n": (m0,)}, (x, u)))
    info = {}
    got = grads(lambda: membptt.scan(cell, {"h": h0, "n": (m0,)}, (x, u), memory=8,
                                     tune=True, repeats=1, info=info))
    assert max_rel_err(got, ref) <= 1e-10
    assert "tune" in info and info["tune"]["candidates"][0]["label"] == \
        info["tune"]["planner_choice"]


def test_scan_refuses_tune_with_a_given_plan():
    with pytest.raises(ValueError, match="nothing to choose"):
        membptt.scan(Cell(), {"h": torch.zeros(B, H, dtype=DT),
                              "n": (torch.zeros(B, 1, dtype=DT),)},
                     (torch.randn(5, B, D, dtype=DT), torch.ones(5, B, dtype=DT)),
                     plan=membptt.plan("full", 5), tune=True)


def test_wrap_and_scan_refuse_a_tune_that_is_not_a_bool():
    with pytest.raises(ValueError, match="tune must be True or False, got 'yes'"):
        membptt.wrap(nn.LSTM(D, H), memory="1MiB", tune="yes")
    with pytest.raises(ValueError, match="tune must be True or False, got 1"):
        membptt.scan(Cell(), {"h": torch.zeros(B, H, dtype=DT),
                              "n": (torch.zeros(B, 1, dtype=DT),)},
                     (torch.randn(5, B, D, dtype=DT), torch.ones(5, B, dtype=DT)), memory=8,
                     tune=1)
