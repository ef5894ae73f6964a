"""Refusals that give the fix (issue 20, item 4): each message names the value and what works."""

import pytest
import torch
from torch import nn

import membptt
from membptt.execution import ProtocolError, bptt, probe
from membptt.models import LSTMLanguageModel, synthetic_task
from membptt.planning import plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T, B, H = 8, 3, 4


class MaskedMean(nn.Module):
    """A GRU cell with a masked-mean loss per step; the mask is all zero at step 2."""

    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(H, H).double()

    def forward(self, h, xt):
        x, y, mask = xt
        h = self.cell(x, h)
        return h, (((h - y) ** 2).sum(-1) * mask).sum() / mask.sum()


def test_nan_loss_in_the_probe_says_which_step_and_the_fix():
    torch.manual_seed(0)
    x, y = torch.randn(T, B, H, dtype=torch.float64), torch.randn(T, B, H, dtype=torch.float64)
    mask = torch.ones(T, B, dtype=torch.float64)
    mask[1] = 0  # step 2: an empty mask, a mean of nothing
    step = MaskedMean()
    with pytest.raises(ProtocolError, match=r"step 2's loss is nan .*masked mean.*"
                                            r"mask.sum\(\).clamp\(min=1\)"):
        probe(step, torch.zeros(B, H, dtype=torch.float64), (x, y, mask))
    mask[1] = 1
    probe(step, torch.zeros(B, H, dtype=torch.float64), (x, y, mask), repeats=1)  # fine now


class NanAdvance(nn.Module):
    """Stepping is finite; the fused advance returns nan (a mean over a block gone wrong)."""

    deterministic = True

    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(H, H).double()

    def forward(self, h, x):
        h = self.cell(x, h)
        return h, h.sum()

    @torch.no_grad()
    def advance(self, h, xs, need_loss=False):
        total = torch.zeros((), dtype=torch.float64)
        for x in xs:
            h, loss = self(h, x)
            total = total + loss
        return h, (total * float("nan") if need_loss else None)


def test_nan_from_advance_is_named_not_an_atol_error():
    x = torch.randn(T, B, H, dtype=torch.float64)
    with pytest.raises(ProtocolError, match=r"step.advance over steps 1..4 \(need_loss=True\) "
                                            r"disagrees .*non-finite values .* where stepping "
                                            r"gives finite ones"):
        probe(NanAdvance(), torch.zeros(B, H, dtype=torch.float64), x)


def test_autograd_grad_on_a_bptt_loss_says_it_is_documented_and_what_to_do():
    torch.manual_seed(1)
    model = LSTMLanguageModel(5, 6, 5).double()
    x, y = synthetic_task(T, B, 5, dense=True, dtype=torch.float64)
    s0 = model.initial_state(B)
    p = plan("msm", T, 4, alpha=2)
    loss = bptt(model, s0, (x, y), p)
    with pytest.raises(RuntimeError, match=r"torch.autograd.grad\(...\).*accumulates .* into "
                                           r".grad.*documented limitation.*loss.backward\(\)"):
        torch.autograd.grad(loss, list(model.parameters()))
    loss = bptt(model, s0, (x, y), p)
    with pytest.raises(RuntimeError, match=r"backward\(inputs=...\).*read p.grad"):
        loss.backward(inputs=list(model.parameters()))
    assert all(q.grad is None for q in model.parameters())  # nothing accumulated


class InitHiddenLIF(nn.Module):
    """snntorch's ``init_hidden=True`` idiom: the neuron keeps its membrane potential itself
    (``self.mem``) and ignores the state it is given."""

    def __init__(self, beta=0.9):
        super().__init__()
        self.beta = beta
        self.mem = torch.zeros(B, H, dtype=torch.float64)

    def forward(self, cur):
        self.mem = self.beta * self.mem + cur
        return torch.sigmoid(self.mem - 1.0)


class SpikingStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(H, H).double()
        self.lif = InitHiddenLIF()

    def forward(self, mem, x):
        spk = self.lif(self.fc(x))
        return self.lif.mem, spk.sum()


def test_init_hidden_idiom_is_named_with_the_fix():
    x = torch.randn(T, B, H, dtype=torch.float64)
    with pytest.raises(ProtocolError, match=r"keeps state of its own outside `state`: lif.mem "
                                            r"changed during one call .*init_hidden=False.*"
                                            r"spk, mem = lif\(cur, mem\)") as e:
        probe(SpikingStep(), torch.zeros(B, H, dtype=torch.float64), x)
    assert "private torch.Generator" not in str(e.value)


def test_wrap_and_scan_refuse_unknown_strategies_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown strategy 'msn'; valid: hsm, ism, msm"):
        membptt.wrap(nn.GRU(H, H), memory=10, strategy="msn")
    with pytest.raises(ValueError, match=r"membptt.scan needs memory=... or plan=..."):
        membptt.scan(lambda h, x: (h, h), torch.zeros(B, H), torch.zeros(T, B, H))
