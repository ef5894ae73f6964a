"""membptt.execution.bptt: exact gradients, executed counts, memory and errors."""

import math

import pytest
import torch
from torch import nn

from membptt.execution import ExecStats, bptt, measure_step, plain_bptt
from membptt.execution.memtrack import LiveBytesTracker
from membptt.models import GRULanguageModel, LSTMLanguageModel, synthetic_task
from membptt.planning import STRATEGIES, Backward, Forward, parse_ops, plan

STRATS = ("full", "hsm", "ism", "msm", "chen", "chen-recursive", "recompute-all")
ALPHA, BETA = 3, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make(kind="lstm", T=7, dropout=0.0, dtype=torch.float64, embed=False, seed=0, B=3,
         fused_chunk=16):
    torch.manual_seed(seed)
    cls = LSTMLanguageModel if kind == "lstm" else GRULanguageModel
    V = 5
    model = cls(V if not embed else 4, 6, V, dropout=dropout, embed=embed,
                fused_chunk=fused_chunk).to(dtype)
    x, y = synthetic_task(T, B, V, dense=not embed, seed=seed, dtype=dtype)
    if not embed:
        x.requires_grad_(True)
    s0 = model.initial_state(B)
    s0 = tuple(t.normal_().requires_grad_() for t in s0) if kind == "lstm" else \
        s0.normal_().requires_grad_()
    return model, s0, (x, y)


def flat(state):
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


def grads(model, s0, inputs):
    """Parameter, state0 and input gradients currently accumulated."""
    out = [p.grad.clone() for p in model.parameters()]
    out += [t.grad.clone() for t in flat(s0)]
    out += [t.grad.clone() for t in inputs if t.requires_grad]
    return out


def clear(model, s0, inputs):
    model.zero_grad(set_to_none=True)
    for t in flat(s0) + tuple(inputs):
        t.grad = None


def reference(model, s0, inputs, seed=123):
    clear(model, s0, inputs)
    torch.manual_seed(seed)
    loss, _ = plain_bptt(model, s0, inputs)
    loss.backward()
    g = grads(model, s0, inputs)
    rng = torch.get_rng_state()
    clear(model, s0, inputs)
    return loss.detach(), g, rng


def run_bptt(model, s0, inputs, p, seed=123, **kw):
    clear(model, s0, inputs)
    torch.manual_seed(seed)
    loss = bptt(model, s0, inputs, p, **kw)
    loss.backward()
    return loss.detach(), grads(model, s0, inputs), torch.get_rng_state()


def max_rel_err(a, b):
    return max(((x - y).abs().max() / y.abs().max().clamp_min(1e-300)).item()
               for x, y in zip(a, b))


def budgets(name, T):
    s = STRATEGIES[name]
    lo = s.min_memory(T, ALPHA, BETA)
    out = [lo, lo + 2, ALPHA * T + 1]
    if not s.needs_memory:
        out = [None] + out[1:]
    return sorted(set(out), key=lambda m: -1 if m is None else m)


GRID = [(name, T, m) for name in STRATS for T in (1, 2, 5, 9) for m in budgets(name, T)]


@pytest.mark.parametrize("kind,dropout", [("lstm", 0.0), ("gru", 0.0), ("lstm", 0.4),
                                          ("gru", 0.4)])
def test_gradients_match_plain_bptt_every_strategy(kind, dropout):
    """float64, every strategy over a (T, budget) grid: max relative error <= 1e-10."""
    worst = 0.0
    cache = {}
    for name, T, mem in GRID:
        if T not in cache:
            model, s0, inputs = make(kind, T, dropout)
            model.train()
            cache[T] = (model, s0, inputs, reference(model, s0, inputs))
        model, s0, inputs, (ref_loss, ref_g, ref_rng) = cache[T]
        p = plan(name, T, mem, alpha=ALPHA, beta=BETA)
        st = ExecStats()
        loss, g, rng = run_bptt(model, s0, inputs, p, stats=st)
        err = max_rel_err(g, ref_g)
        worst = max(worst, err)
        assert err <= 1e-10, (name, T, mem, err)
        assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss), (name, T, mem)
        assert torch.equal(rng, ref_rng), "global RNG state must end where plain BPTT's does"
        assert st.fused == (dropout == 0.0)
        assert st.forward_steps == p.forward_ops and st.backward_steps == T
    assert worst <= 1e-10


@pytest.mark.parametrize("fused", [True, False])
def test_fused_and_loop_runs_both_exact(fused):
    model, s0, inputs = make("lstm", 12)
    _, ref_g, _ = reference(model, s0, inputs)
    p = plan("hsm", 12, 3)
    st = ExecStats()
    _, g, _ = run_bptt(model, s0, inputs, p, fused=fused, stats=st)
    assert max_rel_err(g, ref_g) <= 1e-10
    assert (st.fused_steps > 0) == fused


class Counting:
    """Wraps a step; counts step calls and fused-advance steps."""

    def __init__(self, model):
        self.model, self.calls, self.graph_calls, self.fused_steps = model, 0, 0, 0

    @property
    def deterministic(self):
        return self.model.deterministic

    def __call__(self, state, x):
        self.calls += 1
        self.graph_calls += torch.is_grad_enabled()
        return self.model(state, x)

    def advance(self, state, xs, need_loss):
        self.fused_steps += xs[0].shape[0]
        return self.model.advance(state, xs, need_loss)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("name,mem", [("full", None), ("hsm", 3), ("ism", 6), ("msm", 8),
                                      ("chen", None), ("chen-recursive", None),
                                      ("recompute-all", None)])
def test_step_calls_equal_plan_forward_ops(name, mem, dropout):
    T = 11
    model, s0, inputs = make("lstm", T, dropout)
    p = plan(name, T, mem, alpha=ALPHA, beta=BETA)
    c = Counting(model)
    st = ExecStats()
    bptt(c, s0, inputs, p, stats=st).backward()
    assert c.calls + c.fused_steps == p.forward_ops
    assert c.graph_calls == p.graph_forwards == st.graph_steps
    assert (c.calls, c.fused_steps) == (st.step_calls, st.fused_steps)
    if dropout:  # a step that uses the RNG is never fused
        assert c.fused_steps == 0 and c.calls == p.forward_ops
    elif p.forward_ops > p.graph_forwards:
        assert c.fused_steps == p.forward_ops - p.graph_forwards


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_live_bytes_within_predicted_peak_plus_working_set(kind, dropout):
    """Tensor-level tracker over forward and backward: predicted peak <= measured peak
    <= predicted peak + one step's working set (probed)."""
    T = 16
    model, s0, (x, y) = make(kind, T, dropout, B=4, fused_chunk=4)
    x = x.detach()  # input gradients are not plan memory; keep them out
    s0 = tuple(t.detach() for t in flat(s0)) if kind == "lstm" else s0.detach()
    inputs = (x, y)
    rep = measure_step(model, s0, inputs, chain=8, times=False)
    assert rep.costs.internal_bytes == rep.internal_bytes > rep.hidden_bytes
    model(s0, (x[0], y[0]))[1].backward()  # allocate .grad: later accumulation is in place
    for name, mem in [("full", None), ("hsm", 3), ("hsm", 6), ("ism", 3 * rep.costs.alpha_units()), ("msm", 8),
                      ("msm", 16), ("chen", None), ("chen-recursive", None),
                      ("recompute-all", None)]:
        p = plan(name, T, mem, costs=rep.costs)
        assert p.peak_bytes is not None
        model.zero_grad(set_to_none=False)
        with LiveBytesTracker() as mt:
            loss = bptt(model, s0, inputs, p)
            loss.backward()
            del loss
        assert p.peak_bytes <= mt.peak_bytes <= p.peak_bytes + rep.working_bytes, (
            name, mem, p.peak_bytes, mt.peak_bytes, rep.working_bytes)
        assert mt.current_bytes == 0  # nothing leaks
    # the bound is not vacuous: the working set is small next to full BPTT's memory
    full = plan("full", T, costs=rep.costs)
    assert rep.working_bytes < full.peak_bytes / 2


def test_float32_within_plain_bptt_noise():
    """float32 tolerance from the data: plain float32 BPTT's own error against float64."""
    T = 20
    model, s0, inputs = make("lstm", T)
    _, ref64, _ = reference(model, s0, inputs)
    model32 = model.float()
    s032 = tuple(t.detach().float().requires_grad_() for t in s0)
    in32 = (inputs[0].detach().float().requires_grad_(), inputs[1])
    _, plain32, _ = reference(model32, s032, in32)
    noise = max_rel_err(plain32, [g.float() for g in ref64])
    for name, mem in [("hsm", 3), ("msm", 8), ("ism", 6)]:
        p = plan(name, T, mem, alpha=ALPHA, beta=BETA)
        _, g32, _ = run_bptt(model32, s032, in32, p)
        err = max_rel_err(g32, [g.float() for g in ref64])
        assert err <= 4 * noise + 1e-6, (name, err, noise)


def test_plain_function_step_with_closure_params_and_single_tensor_state():
    torch.manual_seed(0)
    W = nn.Parameter(torch.randn(5, 5, dtype=torch.float64) * 0.4)
    U = nn.Parameter(torch.randn(3, 5, dtype=torch.float64) * 0.4)

    def step(h, x):
        h = torch.tanh(h @ W + x @ U)
        return h, (h ** 2).sum()

    T = 9
    xs = torch.randn(T, 2, 3, dtype=torch.float64)
    h0 = torch.zeros(2, 5, dtype=torch.float64)
    loss, _ = plain_bptt(step, h0, xs)
    ref = torch.autograd.grad(loss, (W, U))
    p = plan("hsm", T, 2)
    out = bptt(step, h0, xs, p)  # nothing requires grad but the closed-over parameters
    out.backward()
    assert max_rel_err([W.grad, U.grad], ref) <= 1e-10
    assert abs(out.item() - loss.item()) <= 1e-12 * abs(loss.item())


def test_return_state_gradient_flows_into_final_state():
    T = 8
    model, s0, inputs = make("lstm", T)
    v = torch.randn(3, 6, dtype=torch.float64)
    clear(model, s0, inputs)
    loss, hT = plain_bptt(model, s0, inputs)
    (loss + (hT[0] * v).sum() + hT[1].sum()).backward()
    ref = grads(model, s0, inputs)
    clear(model, s0, inputs)
    loss2, hT2 = bptt(model, s0, inputs, plan("msm", T, 8, alpha=ALPHA), return_state=True)
    assert torch.allclose(hT2[0], hT[0], rtol=0, atol=1e-12)
    (loss2 + (hT2[0] * v).sum() + hT2[1].sum()).backward()
    assert max_rel_err(grads(model, s0, inputs), ref) <= 1e-10


def test_no_grad_evaluation_matches_plain_loss():
    T = 10
    model, s0, inputs = make("gru", T)
    with torch.no_grad():
        ref, _ = plain_bptt(model, s0, inputs)
        st = ExecStats()
        out = bptt(model, s0, inputs, plan("hsm", T, 2), stats=st)
    assert not out.requires_grad
    assert abs(out.item() - ref.item()) <= 1e-12 * abs(ref.item())
    assert st.graph_steps == 0 and st.forward_steps == T


def test_hand_written_ops_list_and_paper_trace():
    """A plan may be a list of ops; the paper's Fig. 3 trace (HSM, t=10, m=4) runs exactly."""
    trace = ("F1+h F2 F3 F4+h F5 F6 F7+h F8 F9 F10(c) B10 F8 F9(c) B9 F8(c) B8 D7h F5+h F6 "
             "F7(c) B7 F6(c) B6 D5h F5(c) B5 D4h F2+h F3+h F4(c) B4 D3h F3(c) B3 D2h F2(c) B2 "
             "D1h F1(c) B1")
    ops = parse_ops(trace)
    assert sum(isinstance(o, Forward) for o in ops) == 24
    model, s0, inputs = make("lstm", 10)
    _, ref, _ = reference(model, s0, inputs)
    c = Counting(model)
    clear(model, s0, inputs)
    bptt(c, s0, inputs, ops).backward()
    assert max_rel_err(grads(model, s0, inputs), ref) <= 1e-10
    assert c.calls + c.fused_steps == 24


@pytest.mark.parametrize("trace,calls,chains", [
    # full: one chain, one backward call
    ("F1+I F2+I F3+I F4+I F5+I B5 B4 B3 B2 B1", 1, {5: 5}),
    # I_1 is stored when step 2's core forward runs and B1 follows B2: steps 2, 1 are linked
    ("F1+I F2 F3+I B3 F2(c) B2 B1", 2, {3: 1, 2: 2}),
    # a Drop between B3 and B2, and a forward between B2 and B1: nothing is linked
    ("F1+h F2+I F3+I B3 D1h B2 F1(c) B1", 3, {3: 1, 2: 1, 1: 1}),
])
def test_chains_of_stored_internal_states_take_one_backward_call(trace, calls, chains):
    """Consecutive stored internal states with adjacent backwards form one chain (one
    torch.autograd.backward call); gradients stay exact; other steps are not linked."""
    from membptt.execution.compile import Back, compile_plan

    ops = parse_ops(trace)
    T = max(o.step for o in ops)
    program = compile_plan(ops, T).instructions
    assert {ins.step: ins.steps for ins in program if isinstance(ins, Back) and ins.steps} \
        == chains
    assert sum(ins.steps for ins in program if isinstance(ins, Back)) == T
    for kind in ("lstm", "gru"):
        model, s0, inputs = make(kind, T)
        _, ref, _ = reference(model, s0, inputs)
        st = ExecStats()
        _, g, _ = run_bptt(model, s0, inputs, ops, stats=st)
        assert max_rel_err(g, ref) <= 1e-10
        assert st.backward_calls == calls and st.backward_steps == T


def test_dp_plans_backpropagate_whole_segments_in_one_call():
    """An MSM plan stores segments of internal states whole: far fewer calls than steps."""
    T = 40
    model, s0, inputs = make("lstm", T)
    _, ref, _ = reference(model, s0, inputs)
    p = plan("msm", T, 30, alpha=ALPHA, beta=BETA)
    st = ExecStats()
    _, g, _ = run_bptt(model, s0, inputs, p, stats=st)
    assert max_rel_err(g, ref) <= 1e-10
    assert st.backward_steps == T and st.backward_calls <= T // 4


def test_backward_twice_raises():
    model, s0, inputs = make("lstm", 4)
    loss = bptt(model, s0, inputs, plan("full", 4, alpha=ALPHA))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


# -- errors -------------------------------------------------------------------------------------

def test_error_state_shape_changes():
    W = torch.randn(4, 4)

    def step(h, x):
        h2 = torch.tanh(h @ W + x)
        if x[0, 0] > 100:  # at step 3 (marked below) the state grows
            h2 = torch.cat([h2, h2], 1)
        return h2, h2.sum()

    xs = torch.zeros(5, 2, 4)
    xs[2, 0, 0] = 1000
    with pytest.raises(ValueError, match=r"step 3: state element 0 changed: expected shape "
                                         r"\(2, 4\).*got shape \(2, 8\)"):
        bptt(step, torch.zeros(2, 4), xs, plan("hsm", 5, 2))


def test_error_state_structure_changes():
    def step(state, x):
        h, c = state
        return h + x, (h * c).sum()  # drops c

    with pytest.raises(ValueError, match="expected the state to be a tuple of 2 tensors"):
        bptt(step, (torch.zeros(2, 3), torch.zeros(2, 3)), torch.ones(4, 2, 3),
             plan("full", 4, alpha=ALPHA))


def test_error_non_scalar_loss():
    def step(h, x):
        h = h + x
        return h, h.sum(1)

    with pytest.raises(ValueError, match=r"expected the step to return a scalar \(0-dim\) loss "
                                         r"tensor, got a tensor of shape \(2,\)"):
        bptt(step, torch.zeros(2, 3), torch.ones(4, 2, 3), plan("hsm", 4, 2))


def test_error_inputs_length_differs_from_plan():
    model, s0, inputs = make("lstm", 6)
    with pytest.raises(ValueError, match=r"inputs\[0\] has 6 time steps \(dim 0\), but the plan "
                                         r"is for seq_len=7: expected 7 time steps"):
        bptt(model, s0, inputs, plan("hsm", 7, 2))
    x, y = inputs
    with pytest.raises(ValueError, match=r"inputs\[1\] has 5 time steps"):
        bptt(model, s0, (x, y[:5]), plan("hsm", 6, 2))


def test_error_not_a_plan():
    model, s0, inputs = make("lstm", 6)
    with pytest.raises(ValueError, match="expected a membptt Plan .* got the string 'msm'"):
        bptt(model, s0, inputs, "msm")
    with pytest.raises(ValueError, match="expected a membptt Plan .* got CostModel"):
        bptt(model, s0, inputs, measure_step(model, s0, inputs, times=False).costs)
    with pytest.raises(ValueError, match="got dict"):
        bptt(model, s0, inputs, {"ops": []})


def test_error_invalid_ops():
    model, s0, inputs = make("lstm", 3)
    bad = [
        # (validity is the simulator's: PlanError names the op)
        ("F1 F2 F3(c) B3 F2(c) B2 F1(c) B1", r"op #4 F2\(c\): needs h_1"),
        ("F1 F2+h F3(c) B3 F1(c) B1 D2h", "must run 3..1 once each; expected B2"),
        ("F1 F3(c) B3", r"op #1 F3\(c\): needs h_2"),
        ("F1+I F2 F3(c) B3 B2", "needs the internal state of step 2"),
        ("F1+I F2+I F3(c) B3 B2 D2I", "ends before backpropagating steps 1..1"),
        # the executor's own requirement: the first sweep runs 1..T once each, in order
        ("F1+h F2 F1 F2 F3(c) B3 F2(c) B2 D1h F1(c) B1", "expected step 3, got step 1"),
    ]
    for text, msg in bad:
        with pytest.raises(ValueError, match=msg):
            bptt(model, s0, inputs, parse_ops(text))


def test_error_bad_state_and_inputs_types():
    model, s0, inputs = make("lstm", 3)
    p = plan("full", 3, alpha=ALPHA)
    with pytest.raises(ValueError, match="expected state0 to be a tensor or a non-empty tuple/"):
        bptt(model, [], inputs, p)
    with pytest.raises(ValueError, match="expected floating-point state tensors"):
        bptt(model, torch.zeros(3, 6, dtype=torch.long), inputs, p)
    with pytest.raises(ValueError, match="expected inputs to be a tensor"):
        bptt(model, s0, None, p)


# -- CUDA (skipped without a GPU) ----------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_cuda_gradients_and_rng(dropout):
    T = 9
    model, s0, inputs = make("lstm", T, dropout)
    model = model.cuda()
    s0 = tuple(t.detach().cuda().requires_grad_() for t in s0)
    inputs = (inputs[0].detach().cuda().requires_grad_(), inputs[1].cuda())
    _, ref, _ = reference(model, s0, inputs)
    ref_rng = torch.cuda.get_rng_state()  # where plain BPTT leaves the CUDA generator
    for name, mem in [("hsm", 3), ("msm", 8), ("ism", 6)]:
        _, g, _ = run_bptt(model, s0, inputs, plan(name, T, mem, alpha=ALPHA, beta=BETA))
        assert max_rel_err(g, ref) <= 1e-10
        assert torch.equal(torch.cuda.get_rng_state(), ref_rng), (
            f"{name}: the CUDA RNG state must end where plain BPTT's does")
    assert math.isfinite(sum(float(x.sum()) for x in g))


def test_first_op_must_start_the_sweep():
    model, s0, inputs = make("lstm", 2)
    with pytest.raises(ValueError, match=r"op #0 F2\(c\): needs h_1"):
        bptt(model, s0, inputs, [Forward(2, "core"), Backward(2)])
