"""Executor hardening (issue 23, items 5 and 11): a backward that raises midway leaves no
partial gradients in ``.grad``; the compiled-program cache is bounded by bytes."""

import pytest
import torch
from torch import nn

import membptt
from membptt.execution import bptt, executor, plain_bptt
from membptt.models import LSTMLanguageModel, synthetic_task
from membptt.planning import plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 12


def make(seed=0):
    torch.manual_seed(seed)
    model = LSTMLanguageModel(5, 6, 5).double()
    x, y = synthetic_task(T, 3, 5, dense=True, seed=seed, dtype=torch.float64)
    return model, model.initial_state(3), (x, y)


class Failing:
    """A step that raises at its ``fail_at``-th forward with graph during the backward phase
    (recomputation), after some chains were already backpropagated. ``module``: expose the
    model's parameters as an nn.Module would (the executor then uses them directly)."""

    def __init__(self, model, fail_at):
        self.model, self.fail_at, self.armed, self.graph_calls = model, fail_at, False, 0

    def __call__(self, state, x):
        if self.armed and torch.is_grad_enabled():
            self.graph_calls += 1
            if self.graph_calls == self.fail_at:
                raise RuntimeError("recomputation failed")
        return self.model(state, x)


class FailingModule(nn.Module):
    def __init__(self, model, fail_at):
        super().__init__()
        self.model, self.f = model, Failing(model, fail_at)

    def forward(self, state, x):
        return self.f(state, x)


def grads_of(model):
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("as_module", [False, True])
@pytest.mark.parametrize("before", ["none", "accumulated"])
def test_failed_backward_restores_grad(as_module, before):
    model, s0, inputs = make()
    p = plan("hsm", T, 4, alpha=2)  # many backward calls, recomputation between them
    if before == "accumulated":  # gradients of an earlier iteration, accumulating
        loss, _ = plain_bptt(model, s0, inputs)
        loss.backward()
    saved = grads_of(model)
    ids = [id(q.grad) for q in model.parameters()]
    step = FailingModule(model, 3) if as_module else Failing(model, 3)
    f = step.f if as_module else step
    loss = bptt(step, s0, inputs, p)
    f.armed = True
    with pytest.raises(RuntimeError, match="recomputation failed"):
        loss.backward()
    assert f.graph_calls == 3  # it failed midway: two recomputed steps were backpropagated
    for q, g, i in zip(model.parameters(), saved, ids):
        if g is None:
            assert q.grad is None
        else:
            assert torch.equal(q.grad, g) and id(q.grad) == i
    # the executor freed its states: a new call runs and is exact
    model.zero_grad(set_to_none=True)
    bptt(model, s0, inputs, p).backward()
    got = grads_of(model)
    model.zero_grad(set_to_none=True)
    plain_bptt(model, s0, inputs)[0].backward()
    for a, b in zip(got, grads_of(model)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


class RaisingGRU(nn.GRU):
    armed = False
    calls = 0

    def forward(self, x, hx=None):
        if RaisingGRU.armed and torch.is_grad_enabled():
            RaisingGRU.calls += 1
            if RaisingGRU.calls == 3:
                raise RuntimeError("recomputation failed")
        return super().forward(x, hx)


def test_failed_wrap_backward_restores_grad():
    torch.manual_seed(1)
    rnn = RaisingGRU(4, 5).double()
    x = torch.randn(30, 2, 4, dtype=torch.float64)
    w = membptt.wrap(rnn, memory=6, planner="steps", repeats=1)
    w(x)[0].sum().backward()  # plans; leaves accumulated gradients
    saved = grads_of(rnn)
    out, _ = w(x)
    RaisingGRU.armed, RaisingGRU.calls = True, 0
    try:
        with pytest.raises(RuntimeError, match="recomputation failed"):
            (out ** 2).sum().backward()
    finally:
        RaisingGRU.armed = False
    assert RaisingGRU.calls == 3
    for q, g in zip(rnn.parameters(), saved):
        assert torch.equal(q.grad, g)


def test_compiled_cache_is_bounded_by_bytes(monkeypatch):
    monkeypatch.setattr(executor, "_COMPILED", type(executor._COMPILED)())
    monkeypatch.setattr(executor, "_COMPILED_BYTES", [0])
    plans = [plan("msm", 200 + k, 20, alpha=2) for k in range(6)]
    one = executor._program_bytes(plans[0].ops, executor.compiled(plans[0]))
    monkeypatch.setattr(executor, "COMPILED_CACHE_BYTES", int(2.5 * one))
    executor._COMPILED.clear()
    executor._COMPILED_BYTES[0] = 0
    progs = [executor.compiled(p) for p in plans]
    info = executor.compiled_cache_info()
    assert info["bytes"] <= info["limit"] and info["entries"] == 2  # the two most recent
    assert info["bytes"] == sum(e[2] for e in executor._COMPILED.values())
    assert executor.compiled(plans[-1]) is progs[-1]  # a hit
    assert executor.compiled(plans[0]) is not progs[0]  # evicted, compiled afresh
    assert executor.compiled(plans[0]).instructions == progs[0].instructions
    # least recently used goes first: plans[-1] was used after plans[-2]
    assert executor.compiled(plans[-1]) is progs[-1]
    # a program larger than the whole cache is compiled, returned and not kept
    big = plan("msm", 2000, 40, alpha=2)
    before = executor.compiled_cache_info()
    prog = executor.compiled(big)
    assert executor._program_bytes(big.ops, prog) > executor.COMPILED_CACHE_BYTES
    assert executor.compiled_cache_info() == before
    assert executor.compiled(big) is not prog
