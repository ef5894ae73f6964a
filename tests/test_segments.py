"""Fused with-graph segments in the executor (issue 9): exact gradients for every strategy x
block length x LSTM/GRU x dropout, golden compiled programs, the nn.LSTM adapter, nested
states, the protocol check and budgets that bound the measured peak."""

import pytest
import torch
from torch import nn

import membptt
from membptt.execution import ExecStats, ProtocolError, bptt, compiled, measure_step, plain_bptt
from membptt.execution.compile import Back, Graph, compile_plan
from membptt.execution.memtrack import LiveBytesTracker
from membptt.models import FusedRNNStep, GRULanguageModel, LSTMLanguageModel, synthetic_task
from membptt.planning import parse_ops

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make(kind="lstm", T=11, dropout=0.0, dtype=torch.float64, B=3, seed=0):
    torch.manual_seed(seed)
    cls = LSTMLanguageModel if kind == "lstm" else GRULanguageModel
    model = cls(5, 6, 5, dropout=dropout).to(dtype)
    x, y = synthetic_task(T, B, 5, dense=True, seed=seed, dtype=dtype)
    x.requires_grad_(True)
    s0 = model.initial_state(B)
    s0 = tuple(t.normal_().requires_grad_() for t in s0) if kind == "lstm" else \
        s0.normal_().requires_grad_()
    return model, s0, (x, y)


def leaves(model, s0, inputs):
    return list(model.parameters()) + list(
        (s0,) if isinstance(s0, torch.Tensor) else s0) + [inputs[0]]


def grads_of(run, model, s0, inputs, seed=7):
    for t in leaves(model, s0, inputs):
        t.grad = None
    torch.manual_seed(seed)
    loss = run()
    loss.backward()
    return loss.detach(), [t.grad.clone() for t in leaves(model, s0, inputs)]


def rel(a, b):
    return max(((x - y).abs().max() / y.abs().max().clamp_min(1e-300)).item()
               for x, y in zip(a, b))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("strategy,memory", [("hsm", 4), ("ism", 9), ("msm", 14), ("msm", 40)])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_block_plans_with_fused_segments_equal_plain_autograd(kind, dropout, strategy, memory,
                                                               k):
    """Float64 gradients (parameters, state0, inputs) within 1e-10 of plain autograd. With
    active dropout the step is not deterministic: no segment (nor fused run) is used, since a
    fused call cannot replay the per-step masks; the stepped path replays them exactly."""
    T = 11
    model, s0, inputs = make(kind, T, dropout)
    lo = membptt.min_memory(strategy, T, alpha=3, beta=2, block=k).units
    p = membptt.plan(strategy, T, max(memory, lo), alpha=3, beta=2, block=k)
    assert p.block == k
    ref_loss, ref = grads_of(lambda: plain_bptt(model, s0, inputs)[0], model, s0, inputs)
    st = ExecStats()
    loss, g = grads_of(lambda: bptt(model, s0, inputs, p, stats=st), model, s0, inputs)
    assert rel(g, ref) <= 1e-10
    assert abs(float(loss - ref_loss)) <= 1e-10 * abs(float(ref_loss))
    assert st.forward_steps == p.forward_ops and st.backward_steps == T
    assert st.graph_steps == p.graph_forwards
    if dropout:
        assert st.segment_calls == 0 and st.fused_runs == 0
    else:
        # every segment lies inside one block and no block needs more than one call
        prog = compiled(p)
        segs = [ins for ins in prog.instructions if isinstance(ins, Graph)]
        assert all((ins.a - 1) // k == (ins.b - 1) // k for ins in segs)
        assert st.segment_calls == sum(1 for ins in segs if ins.b > ins.a)
        if k > 1:
            assert st.segment_calls > 0


def test_segments_off_for_stepped_plans_unless_asked():
    """A plan made for stepped execution is not run fused (its byte budget was priced on
    stepped internal states); segments=True merges its chains anyway, exactly."""
    T = 12
    model, s0, inputs = make("lstm", T)
    p = membptt.plan("msm", T, 30, alpha=3, beta=2)
    assert p.block is None
    _, ref = grads_of(lambda: plain_bptt(model, s0, inputs)[0], model, s0, inputs)
    st = ExecStats()
    grads_of(lambda: bptt(model, s0, inputs, p, stats=st), model, s0, inputs)
    assert st.segment_calls == 0
    st = ExecStats()
    _, g = grads_of(lambda: bptt(model, s0, inputs, p, segments=True, stats=st), model, s0,
                    inputs)
    assert st.segment_calls > 0 and rel(g, ref) <= 1e-10
    assert st.forward_steps == p.forward_ops


def test_golden_program_of_a_block_plan():
    """HSM on blocks of 2 steps, T = 6, 3 units: the compiled program, instruction by
    instruction (segments end at block boundaries; one backward call per block chain)."""
    p = membptt.plan("hsm", 6, 3, block=2)
    prog = compiled(p, segments=None)
    assert p.trace() == ("F1 F2 push h2 · F3 F4 F5 push I5 · F6(c) B6 B5 pop · F3 push I3 · "
                         "F4(c) B4 B3 pop pop · F1 push I1 · F2(c) B2 B1 pop")
    assert prog.text().splitlines() == [
        "run 1..2 <- h0 store h",
        "run 3..4 <- cursor",
        "graph 5..6 <- cursor core",
        "back 6..5",
        "back 5 (in chain)",
        "graph 3..4 <- hidden:2 core",
        "back 4..3",
        "back 3 (in chain)",
        "free hidden 2",
        "graph 1..2 <- h0 core",
        "back 2..1",
        "back 1 (in chain)",
    ]
    # the same plan compiled for stepped execution: one graph call per step, same chains
    stepped = compiled(p, segments=False)
    assert [str(i) for i in stepped.instructions if isinstance(i, Graph)][:2] == [
        "graph 5 <- cursor", "graph 6 <- link core"]
    assert stepped.backward_calls == prog.backward_calls == 3


def test_segments_never_cover_a_record_read_later():
    """A stored internal state whose output a later forward reads ends its segment."""
    ops = parse_ops("F1+I F2+I F3+I F4(c) B4 B3 F3(c) B3" if False else
                    "F1+I F2+I F3 F4(c) B4 F3(c) B3 B2 B1")
    prog = compile_plan(ops, 4, segments=True)
    graphs = [ins for ins in prog.instructions if isinstance(ins, Graph)]
    # I_2 is read by F3 twice (the run and the core): the segment 1..2 ends at 2
    assert (graphs[0].a, graphs[0].b) == (1, 2)
    assert sum(ins.steps for ins in prog.instructions if isinstance(ins, Back)) == 4


# -- the adapter for a user's own nn.LSTM / nn.GRU ------------------------------------------------

@pytest.mark.parametrize("rnn_cls,layers,batch_first", [
    (nn.LSTM, 1, False), (nn.LSTM, 2, True), (nn.GRU, 2, False)])
def test_fused_rnn_step_adapter_equals_the_users_own_training_step(rnn_cls, layers,
                                                                    batch_first):
    """FusedRNNStep(nn.LSTM, head) through a block MSM plan gives the gradients of the user's
    plain code: the module over the whole sequence, the head, summed cross-entropy."""
    torch.manual_seed(0)
    T, B, I, H, C = 13, 3, 4, 5, 6
    rnn = rnn_cls(I, H, num_layers=layers, batch_first=batch_first).double()
    head = nn.Linear(H, C).double()
    step = FusedRNNStep(rnn, head)
    x = torch.randn(T, B, I, dtype=torch.float64)
    y = torch.randint(0, C, (T, B))
    s0 = step.initial_state(B)

    def users_code():
        xin = x.transpose(0, 1) if batch_first else x
        out, _ = rnn(xin, s0)
        out = out.transpose(0, 1) if batch_first else out
        logits = head(out)
        return nn.functional.cross_entropy(logits.reshape(-1, C), y.reshape(-1),
                                           reduction="sum")

    params = list(step.parameters())
    loss_ref = users_code()
    ref = torch.autograd.grad(loss_ref, params)
    for p_ in params:
        p_.grad = None
    costs = measure_step(step, s0, (x, y), repeats=1, chain=2,
                         segment_lengths=(1, 2, 4)).costs
    plan = membptt.plan("msm", T, "min", costs=costs, planner="blocks")
    # a measured length or a uniform one, ceil(T / K)
    assert plan.block in {1, 2, 4} | {-(-T // K) for K in range(2, T + 1)}
    st = ExecStats()
    loss = bptt(step, s0, (x, y), plan, stats=st)
    loss.backward()
    assert abs(float(loss.detach() - loss_ref.detach())) <= 1e-10 * abs(float(loss_ref.detach()))
    assert rel([p_.grad for p_ in params], list(ref)) <= 1e-10
    assert st.forward_steps == plan.forward_ops


def test_adapter_refuses_what_it_cannot_step():
    with pytest.raises(ValueError, match="bidirectional"):
        FusedRNNStep(nn.LSTM(2, 3, bidirectional=True), nn.Linear(6, 2))
    with pytest.raises(ValueError, match="nn.LSTM or nn.GRU, got Linear"):
        FusedRNNStep(nn.Linear(2, 3), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="proj_size=2"):
        FusedRNNStep(nn.LSTM(2, 3, proj_size=2), nn.Linear(2, 2))


# -- nested states (issue 11) -------------------------------------------------------------------------

def test_nested_state_structures_are_accepted():
    """A state ((h, c), {"n": count}) (tuples, lists, dicts nested) runs with exact gradients;
    a non-tensor leaf is refused naming where it is."""
    torch.manual_seed(0)
    cell = nn.LSTMCell(3, 4).double()

    def step(state, x):
        (h, c), extra = state
        h2, c2 = cell(x, (h, c))
        n = extra["n"] * 0.9 + h2.sum(1, keepdim=True)
        return ((h2, c2), {"n": n}), (h2 ** 2).sum() + n.sum()

    T, B = 7, 2
    x = torch.randn(T, B, 3, dtype=torch.float64)
    s0 = ((torch.randn(B, 4, dtype=torch.float64), torch.randn(B, 4, dtype=torch.float64)),
          {"n": torch.zeros(B, 1, dtype=torch.float64)})
    loss_ref, _ = plain_bptt(step, s0, x)
    ref = torch.autograd.grad(loss_ref, list(cell.parameters()))
    p = membptt.plan("msm", T, 5, alpha=3)
    loss = bptt(step, s0, x, p)
    loss.backward()
    assert rel([q.grad for q in cell.parameters()], list(ref)) <= 1e-10
    bad = ((s0[0][0], s0[0][1]), {"n": 3})
    with pytest.raises(ValueError, match=r"state0\[1\]\['n'\] is int"):
        bptt(step, bad, x, p)


# -- protocol check ------------------------------------------------------------------------------------

class _Broken(LSTMLanguageModel):
    def __init__(self, what):
        super().__init__(5, 6, 5)
        self.what = what

    def advance(self, state, xs, need_loss=False):
        st, loss = super().advance(state, xs, need_loss)
        if self.what == "advance-loss" and loss is not None:
            loss = loss * 2
        return st, loss

    def segment(self, state, xs):
        st, loss = super().segment(state, xs)
        if self.what == "segment-state":
            st = (st[0] + 0.5, st[1])
        return st, loss


@pytest.mark.parametrize("what,match", [
    ("advance-loss", r"step.advance over steps 1..4 \(need_loss=True\) disagrees .* ratio 2"),
    ("segment-state", r"step.segment over steps 1..4 disagrees .* state element 0 differs"),
])
def test_probe_protocol_check_names_the_call_that_disagrees(what, match):
    torch.manual_seed(0)
    model = _Broken(what)
    x, y = synthetic_task(12, 3, 5, dense=True)
    with pytest.raises(ProtocolError, match=match):
        membptt.probe(model, model.initial_state(3), (x, y), repeats=1, chain=2)


def test_probe_refuses_a_step_drawing_from_a_private_generator():
    """A private torch.Generator is not replayed on recomputation (gradients would be wrong);
    the probe's replay check says so instead of returning silently."""
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(4, 4)

    def step(h, x):
        mask = (torch.rand(h.shape, generator=gen) > 0.5).float()
        h2 = torch.tanh(lin(h * mask) + x)
        return h2, h2.sum()

    x, h0 = torch.randn(6, 2, 4), torch.randn(2, 4)
    rng = torch.get_rng_state()
    with pytest.raises(ProtocolError, match="private torch.Generator"):
        membptt.probe(step, h0, x, repeats=1, chain=2)
    assert torch.equal(rng, torch.get_rng_state())  # (issue 11) RNG restored on failure


# -- budgets bound the measured peak --------------------------------------------------------------------

@pytest.mark.parametrize("memory", ["30%", "50%"])
def test_measured_peak_within_the_byte_budget(memory):
    """Plans on probed fused costs: the live tensor bytes of a whole iteration (parameter
    gradients included) stay within the budget, as predicted."""
    torch.manual_seed(0)
    T, B = 64, 8
    model = LSTMLanguageModel(16, 32, 16)
    x, y = synthetic_task(T, B, 16, dense=True)
    s0 = model.initial_state(B)
    rep = measure_step(model, s0, (x, y), repeats=1, chain=4, segment_lengths=(1, 2, 4, 8, 16))
    p = membptt.plan("msm", T, memory, costs=rep.costs)
    model.zero_grad(set_to_none=True)
    with LiveBytesTracker() as tr:
        bptt(model, s0, (x, y), p).backward()
    budget = p.budget.bytes
    assert p.predicted_peak_bytes <= budget
    assert tr.peak_bytes <= budget, (tr.peak_bytes, p.predicted_peak_bytes, budget, p.block)
    # and the prediction is not vacuous (measured here: 0.5-0.98 of it, by the block chosen:
    # the working set is the largest over a lone core, chains and a fused run's transient)
    assert tr.peak_bytes >= 0.4 * p.predicted_peak_bytes


@pytest.mark.parametrize("K", [4, 5])
def test_the_checkpoints_own_schedule_fits_at_its_measured_peak(K):
    """At torch.utils.checkpoint's own measured peak (K fused segments), the planner's
    accounting admits the checkpoint's own schedule (K blocks of T / K steps, every bound
    stored), the executor running it holds no more than the checkpoint, and the front door's
    plan is predicted no slower than it, inside the budget as measured."""
    from membptt.measure import WorkloadConfig, make_workload
    from membptt.measure.memory import tracked_peak
    from membptt.measure.methods import make_method

    T = 160
    w = make_workload(WorkloadConfig(seq_len=T, hidden=16, input_size=16, classes=16, batch=2))

    def peak(spec):
        m = make_method(spec, w)
        m.prepare()
        w.zero_grad()
        m.run()  # warm-up: allocates .grad as a training loop's later iterations have it
        w.zero_grad()
        got = tracked_peak(m.run)[0]
        w.zero_grad()
        return m, got

    budget = min(peak(f"torch-checkpoint-fused{mode}:segments={K}")[1]
                 for mode in ("", "-reentrant"))
    own, own_peak = peak(f"hsm-measured:planner=blocks:block={T // K}:memory={budget}B")
    # as fast as with memory to spare: every bound the schedule needs is stored
    spare = membptt.plan("hsm", T, f"{10 * budget}B", costs=own.probed, planner="blocks",
                         block=T // K)
    assert own.plan.predicted_cost == pytest.approx(spare.predicted_cost, rel=1e-12)
    assert own.plan.forward_ops == spare.forward_ops
    assert own_peak <= own.plan.predicted_peak_bytes <= budget
    best, best_peak = peak(f"msm-measured:memory={budget}B")
    assert best.plan.predicted_cost <= own.plan.predicted_cost
    assert best_peak <= best.plan.predicted_peak_bytes <= budget
    # the accounting is tight: within one hidden state and a few percent of what is measured
    assert own.plan.predicted_peak_bytes - own_peak <= 0.03 * own_peak


# -- CUDA (skipped without a GPU) ----------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cuda_fused_segments_equal_plain_autograd(kind):
    """Block plans on CUDA: segments run the cuDNN (or native) fused kernel with graph;
    gradients equal plain autograd's on the same device (float64)."""
    T = 11
    model, s0, inputs = make(kind, T)
    model = model.cuda()
    s0 = (tuple(t.detach().cuda().requires_grad_() for t in s0) if kind == "lstm"
          else s0.detach().cuda().requires_grad_())
    inputs = (inputs[0].detach().cuda().requires_grad_(), inputs[1].cuda())
    _, ref = grads_of(lambda: plain_bptt(model, s0, inputs)[0], model, s0, inputs)
    for strategy, k in (("msm", 3), ("hsm", 2), ("ism", 4)):
        lo = membptt.min_memory(strategy, T, alpha=3, beta=2, block=k).units
        p = membptt.plan(strategy, T, lo + 2, alpha=3, beta=2, block=k)
        st = ExecStats()
        _, g = grads_of(lambda p=p, st=st: bptt(model, s0, inputs, p, stats=st), model, s0, inputs)
        assert st.segment_calls > 0
        assert rel(g, ref) <= 1e-9
