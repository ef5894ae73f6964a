"""FusedRNNStep for what users have (issue 20, item 3): extra per-step inputs passed to the loss,
batch-first data through ``step.inputs``, last-step losses, and a message for every layout
mistake. Gradients against the user's own plain code (float64, <= 1e-10 relative)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import membptt
from membptt.execution import ExecStats, bptt, measure_step
from membptt.models import FusedRNNStep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T, B, I, H, C = 13, 3, 4, 5, 6


def rel(got, ref):
    return max(float((g - r).abs().max()) / max(float(r.abs().max()), 1e-300)
               for g, r in zip(got, ref))


def block_plan(step, s0, inputs):
    costs = measure_step(step, s0, inputs, repeats=1, chain=2, segment_lengths=(1, 2, 4)).costs
    return membptt.plan("msm", T, "60%", costs=costs)


def setup(cls, bf, seed=0):
    torch.manual_seed(seed)
    rnn = cls(I, H, num_layers=2, batch_first=bf).double()
    head = nn.Linear(H, C).double()
    shape = (B, T) if bf else (T, B)
    x = torch.randn(*shape, I, dtype=torch.float64)
    y = torch.randint(0, C, shape)
    return rnn, head, x, y


@pytest.mark.parametrize("cls,bf", [(nn.LSTM, False), (nn.LSTM, True), (nn.GRU, True)])
def test_mask_extra_in_the_modules_layout(cls, bf):
    """A mask (in the module's layout) weights the default summed cross-entropy; batch-first
    data go through step.inputs; gradients equal the user's plain code."""
    rnn, head, x, y = setup(cls, bf)
    mask = (torch.rand(y.shape) > 0.3).double()
    step = FusedRNNStep(rnn, head)
    s0 = step.initial_state(B)

    def users_code():
        out, _ = rnn(x, s0)
        ce = F.cross_entropy(head(out).reshape(-1, C), y.reshape(-1), reduction="none")
        return (ce * mask.reshape(-1)).sum()

    params = list(step.parameters())
    loss_ref = users_code()
    ref = torch.autograd.grad(loss_ref, params)
    inputs = step.inputs(x, y, mask)
    p = block_plan(step, s0, inputs)
    st = ExecStats()
    loss = bptt(step, s0, inputs, p, stats=st)
    loss.backward()
    assert abs(float(loss.detach() - loss_ref.detach())) <= 1e-10 * abs(float(loss_ref.detach()))
    assert rel([q.grad for q in params], ref) <= 1e-10
    assert st.segment_calls > 0 or st.fused_runs > 0  # fused calls ran with the extra


def test_custom_loss_with_two_extras_and_a_last_step_loss():
    """loss_fn(logits, targets, *extras); the last-step recipe (weight 1 at step T only)
    equals the user's loss on the last output alone."""
    rnn, head, x, y = setup(nn.GRU, False, seed=1)
    w_last = torch.zeros(T, B, dtype=torch.float64)
    w_last[-1] = 1
    scale = torch.rand(T, B, dtype=torch.float64) + 0.5

    def loss_fn(logits, targets, w, s):
        return (F.cross_entropy(logits, targets, reduction="none") * w * s).sum()

    step = FusedRNNStep(rnn, head, loss_fn)
    s0 = step.initial_state(B)
    out, _ = rnn(x, s0)
    loss_ref = (F.cross_entropy(head(out[-1]), y[-1], reduction="none") * scale[-1]).sum()
    params = list(step.parameters())
    ref = torch.autograd.grad(loss_ref, params)
    inputs = step.inputs(x, y, w_last, scale)
    loss = bptt(step, s0, inputs, block_plan(step, s0, inputs))
    loss.backward()
    assert abs(float(loss.detach() - loss_ref.detach())) <= 1e-10 * abs(float(loss_ref.detach()))
    assert rel([q.grad for q in params], ref) <= 1e-10


def test_ignore_index_recipe_for_a_last_step_loss():
    rnn, head, x, y = setup(nn.LSTM, False, seed=2)
    y_last = torch.full_like(y, -100)
    y_last[-1] = y[-1]
    step = FusedRNNStep(rnn, head)
    s0 = step.initial_state(B)
    out, _ = rnn(x, s0)
    loss_ref = F.cross_entropy(head(out[-1]), y[-1], reduction="sum")
    params = list(step.parameters())
    ref = torch.autograd.grad(loss_ref, params)
    loss = bptt(step, s0, (x, y_last), block_plan(step, s0, (x, y_last)))
    loss.backward()
    assert rel([q.grad for q in params], ref) <= 1e-10


def test_every_layout_mistake_has_a_message():
    rnn, head, x, y = setup(nn.LSTM, True)  # batch-first module and data (B, T, ...)
    step = FusedRNNStep(rnn, head)
    s0 = step.initial_state(B)
    p = membptt.plan("msm", T, 6, alpha=2)
    # x alone (no targets)
    with pytest.raises(ValueError, match=r"takes inputs \(x, y\) or \(x, y, \*extras\).*got a "
                                         r"tensor of shape \(\d+, 3, 4\) per block of steps"):
        bptt(step, s0, x.transpose(0, 1), p)
    # batch-first data given as time-major to a batch_first module: the plan's length
    with pytest.raises(ValueError, match=r"inputs\[0\] has 3 time steps.*dim 1 has 13: "
                                         r"batch-first data\?"):
        bptt(step, s0, (x, y), p)
    # ... and without a plan (the probe): the step names the layout and the fix
    with pytest.raises(ValueError, match=r"x_t has 13 rows but the state has batch 3.*"
                                         r"batch_first=True: pass step.inputs"):
        measure_step(step, s0, (x, y))
    # step.inputs checks shapes in the module's layout
    with pytest.raises(ValueError, match=r"y has shape \(13, 3\), but x has \(3, 13\)"):
        step.inputs(x, y.transpose(0, 1))
    with pytest.raises(ValueError, match=r"x must be \(B, T, ...\) \(batch_first=True\) with "
                                         r"input_size=4 .*got shape \(3, 13, 7\)"):
        step.inputs(torch.randn(B, T, 7, dtype=torch.float64), y)
    with pytest.raises(ValueError, match=r"extras\[0\] must be a tensor"):
        step.inputs(x, y, 3.0)
    xt, yt = step.inputs(x, y)
    with pytest.raises(ValueError, match=r"x_t must be \(B, input_size=4\) per step.*got "
                                         r"\((\d+, )?3, 7\) per (block of steps|step)"):
        bptt(step, s0, (torch.randn(T, B, 7, dtype=torch.float64), yt), p)
    with pytest.raises(ValueError, match=r"y must have the batch \(3\)"):
        bptt(step, s0, (xt, torch.zeros(T, 2, dtype=torch.long)), p)
    with pytest.raises(ValueError, match=r"at most one extra input.*got 2"):
        bptt(step, s0, (xt, yt, torch.ones(T, B), torch.ones(T, B)), p)
    with pytest.raises(ValueError, match=r"weight extra must match the targets' shape"):
        bptt(step, s0, (xt, yt, torch.ones(T, B, 2)), p)


@pytest.mark.parametrize("layers,dropout,eval_expected", [(1, 0.0, True), (2, 0.0, True),
                                                          (1, 0.5, True), (2, 0.5, False)])
def test_graph_free_calls_run_in_eval_mode_where_exact(layers, dropout, eval_expected,
                                                        monkeypatch):
    """On CUDA, a graph-free call of a module in training mode runs with ``training=False``
    when no dropout is active between layers (same result; cuDNN keeps no training reserve),
    and the module is left in training mode; with graph, or with active dropout, it stays
    training. (On CPU eval mode buys nothing; the rule is checked here with ``is_cuda``
    reported true, and on a GPU by the CUDA tests.)"""
    import warnings

    from membptt.models.fusedcall import run_module

    class CudaLike(torch.Tensor):  # a CPU tensor that says it is on CUDA, for the rule only
        @property
        def is_cuda(self):
            return True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout with one layer
        rnn = nn.LSTM(3, 4, num_layers=layers, dropout=dropout).double()
    seen = []
    rnn.register_forward_pre_hook(lambda m, a: seen.append(m.training))
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        h = run_module(rnn, x.as_subclass(CudaLike), None, chunk=4)
    assert seen == [not eval_expected] * 2 and rnn.training
    seen.clear()
    run_module(rnn, x, None)
    assert seen == [True]
    if dropout == 0.0:
        torch.manual_seed(0)
        _, ref = rnn(x)
        assert all(torch.equal(a, b) for a, b in zip(h, ref))


@pytest.mark.parametrize("chunk", [1, 3, T])
def test_advance_takes_a_planned_chunk_and_rejects_a_bad_one(chunk):
    """advance(..., chunk=c): calls of c steps give the default split's state and loss; a
    chunk that is not an integer >= 1 is refused, naming it."""
    rnn, head, x, y = setup(nn.LSTM, False)
    step = FusedRNNStep(rnn, head)
    s0 = step.initial_state(B)
    xs = step.inputs(x, y)
    ref_h, ref_loss = step.advance(s0, xs, True)
    h, loss = step.advance(s0, xs, True, chunk=chunk)
    assert torch.allclose(loss, ref_loss, rtol=1e-12, atol=0)
    for a, b in zip(torch.utils._pytree.tree_leaves(h), torch.utils._pytree.tree_leaves(ref_h)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=f"chunk must be an integer >= 1.*{bad!r}"):
            step.advance(s0, xs, chunk=bad)
