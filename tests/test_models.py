"""membptt.models: the LSTM/GRU steps, their fused advance and the synthetic task."""

import pytest
import torch

from membptt.models import GRULanguageModel, LSTMLanguageModel, synthetic_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def loop(model, state, xs):
    total = None
    with torch.no_grad():
        for x, y in zip(*xs):
            state, loss = model(state, (x, y))
            total = loss if total is None else total + loss
    return state, total


def flat(s):
    return (s,) if isinstance(s, torch.Tensor) else tuple(s)


@pytest.mark.parametrize("cls", [LSTMLanguageModel, GRULanguageModel])
@pytest.mark.parametrize("embed", [False, True])
@pytest.mark.parametrize("chunk,loss_chunk", [(1, 1), (3, 2), (64, 16), (4, 64)])
def test_fused_advance_equals_step_loop(cls, embed, chunk, loss_chunk):
    torch.manual_seed(0)
    V, T, B = 7, 11, 3
    model = cls(5 if embed else V, 8, V, embed=embed, fused_chunk=chunk,
                loss_chunk=loss_chunk).double()
    x, y = synthetic_task(T, B, V, dense=not embed, dtype=torch.float64)
    s0 = model.initial_state(B)
    s0 = tuple(t.normal_() for t in flat(s0))
    s0 = s0 if cls is LSTMLanguageModel else s0[0]
    ref_state, ref_loss = loop(model, s0, (x, y))
    state, loss = model.advance(s0, (x, y), True)
    for a, b in zip(flat(state), flat(ref_state)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert abs(loss.item() - ref_loss.item()) <= 1e-12 * abs(ref_loss.item())
    state2, none = model.advance(s0, (x, y), False)
    assert none is None
    assert all(torch.equal(a, b) for a, b in zip(flat(state2), flat(state)))


def test_fused_module_shares_the_cells_parameters():
    model = LSTMLanguageModel(4, 6, 4)
    names = [n for n, _ in model.named_parameters()]
    assert not any("fused" in n for n in names) and len(names) == len(set(names))
    assert not any("fused" in k for k in model.state_dict())
    x, y = synthetic_task(5, 2, 4, dense=True)
    s0 = model.initial_state(2)
    with torch.no_grad():
        model.cell.weight_hh.mul_(2.0)  # in-place change is seen by the fused path
    a, _ = model.advance(s0, (x, y))
    b, _ = loop(model, s0, (x, y))
    assert torch.allclose(a[0], b[0], atol=1e-6)
    model.double()  # conversion (new tensors) is followed as well
    x = x.double()
    a, _ = model.advance(tuple(t.double() for t in s0), (x, y))
    b, _ = loop(model, tuple(t.double() for t in s0), (x, y))
    assert a[0].dtype == torch.float64 and torch.allclose(a[0], b[0], atol=1e-12)


def test_deterministic_flag_and_dropout():
    model = GRULanguageModel(4, 6, 4, dropout=0.5)
    assert not model.deterministic
    x, y = synthetic_task(5, 2, 4, dense=True)
    with pytest.raises(RuntimeError, match="without active dropout"):
        model.advance(model.initial_state(2), (x, y))
    model.eval()
    assert model.deterministic
    model.train()
    torch.manual_seed(1)
    _, l1 = model(model.initial_state(2), (x[0], y[0]))
    torch.manual_seed(1)
    _, l2 = model(model.initial_state(2), (x[0], y[0]))
    torch.manual_seed(2)
    _, l3 = model(model.initial_state(2), (x[0], y[0]))
    assert l1.item() == l2.item() != l3.item()
    assert GRULanguageModel(4, 6, 4).deterministic


def test_step_interface_shapes():
    model = LSTMLanguageModel(4, 6, 9, embed=True)
    x, y = synthetic_task(3, 5, 9)
    (h, c), loss = model(model.initial_state(5), (x[0], y[0]))
    assert h.shape == c.shape == (5, 6) and loss.dim() == 0
    g = GRULanguageModel(9, 6, 9)
    xd, _ = synthetic_task(3, 5, 9, dense=True)
    h, loss = g(g.initial_state(5), (xd[0], y[0]))
    assert h.shape == (5, 6) and loss.dim() == 0


def test_synthetic_task_is_deterministic_delayed_copy():
    x1, y1 = synthetic_task(10, 4, 6, delay=3, seed=5)
    x2, y2 = synthetic_task(10, 4, 6, delay=3, seed=5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, synthetic_task(10, 4, 6, delay=3, seed=6)[0])
    assert torch.equal(y1[3:], x1[:7]) and (y1[:3] == 0).all()
    assert x1.dtype == torch.long and 0 <= x1.min() and x1.max() < 6
    xd, _ = synthetic_task(10, 4, 6, delay=3, seed=5, dense=True, dtype=torch.float64)
    assert xd.shape == (10, 4, 6) and torch.equal(xd.argmax(-1), x1)
    state = torch.get_rng_state()
    synthetic_task(10, 4, 6)
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched


def test_bad_arguments():
    with pytest.raises(ValueError, match="cell must be one of"):
        from membptt.models import RNNLanguageModel
        RNNLanguageModel("rnn", 2, 2, 2)
    with pytest.raises(ValueError, match="dropout"):
        LSTMLanguageModel(2, 2, 2, dropout=1.5)
    with pytest.raises(ValueError, match="seq_len"):
        synthetic_task(0, 2)
