"""Chain planning (issue 9): BPTT-HSM with fused chains of any length priced by length.

The DP against BPTT-HSM on unit prices and against brute force; plans valid, inside their byte
budget, never worse than the block HSM plans they contain; exact gradients through the executor
with one fused call per chain; the measured peak inside the budget."""

import functools
import math

import numpy as np
import pytest
import torch
from test_blocks import HB, LENGTHS  # the synthetic fused model of the block tests
from test_blocks import fused_costs as costs

import membptt
from membptt.execution import ExecStats, bptt, compiled, measure_step, plain_bptt
from membptt.execution.compile import Graph
from membptt.execution.memtrack import LiveBytesTracker
from membptt.models import GRULanguageModel, LSTMLanguageModel, synthetic_task
from membptt.planning import BudgetTooSmall, CostModel
from membptt.planning.chains import solve
from membptt.planning.dp import c_hsm
from membptt.planning.limits import PlanTooLarge

# -- the DP ---------------------------------------------------------------------------------------

def test_unit_prices_and_one_step_chains_give_bptt_hsm():
    T, M = 40, 6
    C, kind, arg = solve(T, M, np.arange(T + 1, dtype=float), [np.inf, 1.0],
                         np.ones((2, M + 1), dtype=bool))
    for t in range(1, T + 1):
        for m in range(1, M + 1):
            assert C[t, m] == c_hsm(t, m), (t, m)
        assert math.isinf(C[t, 0]) and kind[t, 0] == -1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_prices_agree_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    T, M, lmax = 16, 6, 5
    chain = np.concatenate([[np.inf], 0.7 + np.cumsum(rng.uniform(0.5, 3.0, lmax))])
    run = np.concatenate([[0.0], 0.3 + np.cumsum(rng.uniform(0.2, 1.0, T))])
    ok = rng.uniform(size=(lmax + 1, M + 1)) < 0.7
    ok[1, 1:] = True

    @functools.cache
    def brute(t, m):
        if t == 0:
            return 0.0
        if m <= 0:
            return math.inf
        c = [run[y] + brute(t - y, m - 1) + brute(y, m) for y in range(1, t)]
        c += [run[t - L] + chain[L] + brute(t - L, m) for L in range(1, min(lmax, t) + 1)
              if ok[L, m]]
        return min(c)

    C, _, _ = solve(T, M, run, chain, ok)
    for t in range(T + 1):
        for m in range(M + 1):
            assert C[t, m] == pytest.approx(brute(t, m), rel=1e-12, abs=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("M", [3, 12, 45])
def test_saturation_is_exact(seed, M):
    """Rows computed only up to m_all + t - 1 and copied beyond equal the full tables (costs,
    actions and arguments), for budgets where chains stop fitting as states pile up."""
    from membptt.planning.chains import dp_work, saturation
    rng = np.random.default_rng(seed)
    T, lmax = 40, 9
    chain = np.concatenate([[np.inf], 0.5 + np.cumsum(rng.uniform(0.3, 2.0, lmax))])
    run = np.concatenate([[0.0], 0.2 + np.cumsum(rng.uniform(0.2, 1.0, T))])
    m = np.arange(M + 1)
    need = rng.integers(0, M, size=lmax + 1)  # chain L fits once m >= need[L] (monotone in m)
    ok = (m[None, :] >= np.maximum(need[:, None], 1))
    ok[1] = m >= 1
    full = solve(T, M, run, chain, ok, saturate=False)
    sat = solve(T, M, run, chain, ok)
    for a, b in zip(full, sat):
        np.testing.assert_array_equal(a, b)
    okc = ok[:, 1:].copy()
    okc[0] = False
    m_all = saturation(okc)
    assert 1 <= m_all <= M and (okc[:, m_all - 1:] == okc[:, -1:]).all()
    assert m_all == 1 or not (okc[:, m_all - 2] == okc[:, -1]).all()
    assert dp_work(T, M, lmax, m_all) <= dp_work(T, M, lmax, M) <= (T + 1) * M * (T + lmax)


@pytest.mark.skipif(__import__("membptt.planning.dp", fromlist=["x"]).CHAIN_CORE is None,
                    reason="the compiled DP core is not built")
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("saturate", [True, False])
def test_compiled_loop_equals_numpy_bit_for_bit(seed, saturate):
    """The compiled loop (_dpcore.c) does numpy's sums in numpy's order: equal tables, ties
    included (prices on a coarse grid make ties common)."""
    rng = np.random.default_rng(seed)
    T, M, lmax = 50, 30, 12
    chain = np.concatenate([[np.inf], rng.integers(1, 6, lmax).cumsum() * 0.5])
    chain[rng.integers(1, lmax + 1)] = np.inf  # a length that cannot run
    run = np.concatenate([[0.0], rng.integers(1, 3, T).cumsum() * 0.25])
    m = np.arange(M + 1)
    need = rng.integers(0, M, size=lmax + 1)
    ok = m[None, :] >= np.maximum(need[:, None], 1)
    ok[1] = m >= 1
    a = solve(T, M, run, chain, ok, saturate=saturate, use="numpy")
    b = solve(T, M, run, chain, ok, saturate=saturate, use="c")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="use must be"):
        solve(T, M, run, chain, ok, use="fortran")


def test_large_budgets_plan_at_saturated_cost():
    """A budget with far more slots than steps is planned (work bounded by T, not M) and equals
    the plan of a budget of 40 states more than one per step."""
    T = 120
    c = costs()
    huge = membptt.plan("hsm", T, "10000000B", costs=c, planner="chains", max_dp_work=3 * 10**6)
    assert huge.info["dp_slots"] > 50 * T
    enough = membptt.plan("hsm", T, f"{(T + 40) * HB}B", costs=c, planner="chains")
    assert huge.predicted_cost == pytest.approx(enough.predicted_cost, rel=1e-12)


def test_solve_refuses_bad_shapes():
    with pytest.raises(ValueError, match="run must have"):
        solve(5, 2, np.arange(5.0), [np.inf, 1.0], np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="ok must have shape"):
        solve(5, 2, np.arange(6.0), [np.inf, 1.0], np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="costs >= 0"):
        solve(5, 2, np.arange(6.0), [np.inf, np.nan], np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="costs >= 0"):
        solve(5, 2, -np.arange(6.0), [np.inf, 1.0], np.ones((2, 3), dtype=bool))


# -- plans ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1, 7, 40, 97])
@pytest.mark.parametrize("memory", ["30000B", "60000B", "150000B"])
def test_chain_plans_are_valid_inside_the_budget_and_replay_their_dp(T, memory):
    c = costs()
    p = membptt.plan("hsm", T, memory, costs=c, planner="chains")
    assert p.planner == "chains" and p.block is None
    assert p.backward_ops == T  # the simulator replayed the ops (plan() validates them)
    assert p.predicted_peak_bytes <= p.budget.bytes
    assert p.predicted_cost == pytest.approx(p.info["dp_cost"], rel=1e-9)
    # every chain is one run of consecutive steps, and the executor breaks segments there
    assert sum(b - a + 1 for a, b in p.chains) == T
    assert set(p.segment_ends) == {b for _, b in p.chains}
    assert all(b - a + 1 <= LENGTHS[-1] for a, b in p.chains)


@pytest.mark.parametrize("T", [40, 97])
@pytest.mark.parametrize("memory", ["40000B", "80000B", "150000B"])
@pytest.mark.parametrize("k", [2, 4, 8])
def test_chains_never_cost_more_than_block_hsm(T, memory, k):
    """A block HSM plan (checkpoints at block bounds, a core block of k steps) is one of the
    plans the chain DP searches, so the chain optimum is at most its (replayed) price."""
    c = costs()
    try:
        blk = membptt.plan("hsm", T, memory, costs=c, block=k)
    except BudgetTooSmall:
        pytest.skip("no block plan of this k fits")
    ch = membptt.plan("hsm", T, memory, costs=c, planner="chains")
    if T % k == 0:  # no ragged block: the block plan is exactly in the chain class
        assert ch.predicted_cost <= blk.predicted_cost + 1e-9


def test_chain_plan_errors_name_the_problem():
    c = costs()
    with pytest.raises(ValueError, match="planner .chains. does not apply to strategy .ism."):
        membptt.plan("ism", 20, "50000B", costs=c, planner="chains")
    with pytest.raises(ValueError, match="needs costs with segments"):
        membptt.plan("hsm", 20, "50000B", costs=CostModel(hidden_bytes=HB, internal_bytes=2 * HB),
                     planner="chains")
    with pytest.raises(ValueError, match="bytes or a percentage"):
        membptt.plan("hsm", 20, 10, costs=c, planner="chains")
    with pytest.raises(BudgetTooSmall, match="below the minimum") as e:
        membptt.plan("hsm", 20, "10000B", costs=c, planner="chains")
    assert e.value.minimum == 14 * HB == membptt.min_memory("hsm", 20, costs=c,
                                                            planner="chains").bytes
    membptt.plan("hsm", 20, f"{14 * HB}B", costs=c, planner="chains")  # the minimum is feasible
    with pytest.raises(PlanTooLarge, match="max_dp_work"):
        membptt.plan("hsm", 500, "400000B", costs=c, planner="chains", max_dp_work=10**6)


# -- execution ------------------------------------------------------------------------------------

def _make(kind, T, B=3, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    cls = LSTMLanguageModel if kind == "lstm" else GRULanguageModel
    model = cls(5, 6, 5).to(dtype)
    x, y = synthetic_task(T, B, 5, dense=True, seed=seed, dtype=dtype)
    return model, model.initial_state(B), (x, y)


def _against_plain(model, s0, inputs, p):
    """(largest relative gradient error of ``bptt`` with plan ``p`` against plain autograd,
    the executor's stats, the gradients)."""
    model.zero_grad(set_to_none=True)
    plain_bptt(model, s0, inputs)[0].backward()
    ref = [q.grad.clone() for q in model.parameters()]
    model.zero_grad(set_to_none=True)
    st = ExecStats()
    bptt(model, s0, inputs, p, stats=st).backward()
    got = [q.grad for q in model.parameters()]
    err = max(((g - r).abs().max() / r.abs().max()).item() for g, r in zip(got, ref))
    return err, st, got


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("memory", ["40000B", "90000B"])
@pytest.mark.parametrize("strategy", ["hsm", "msm"])  # an HSM chain plan is an MSM plan
def test_chain_plans_equal_plain_autograd_with_one_fused_call_per_chain(kind, memory, strategy):
    T = 37
    model, s0, inputs = _make(kind, T)
    p = membptt.plan(strategy, T, memory, costs=costs(), planner="chains")
    assert p.strategy == strategy and p.planner == "chains"
    err, st, _ = _against_plain(model, s0, inputs, p)
    assert err <= 1e-10
    segs = [ins for ins in compiled(p).instructions if isinstance(ins, Graph)]
    assert sorted((g.a, g.b) for g in segs) == sorted(p.chains)
    assert st.segment_calls == sum(1 for a, b in p.chains if b > a) > 0


@pytest.mark.usefixtures("one_torch_thread")
def test_measured_peak_within_the_byte_budget_on_probed_costs():
    torch.manual_seed(0)
    T, B = 64, 8
    model = LSTMLanguageModel(16, 32, 16)
    x, y = synthetic_task(T, B, 16, dense=True)
    s0 = model.initial_state(B)
    rep = measure_step(model, s0, (x, y), repeats=1, chain=4, segment_lengths=(1, 2, 4, 8, 16))
    for memory in ("25%", "50%"):
        p = membptt.plan("hsm", T, memory, costs=rep.costs, planner="chains")
        model.zero_grad(set_to_none=True)
        with LiveBytesTracker() as tr:
            bptt(model, s0, (x, y), p).backward()
        assert p.predicted_peak_bytes <= p.budget.bytes
        assert tr.peak_bytes <= p.budget.bytes, (memory, tr.peak_bytes, p.predicted_peak_bytes)


# -- the lone core's working set (SegmentCosts.core_bytes) ----------------------------------------

def _with_core(core):
    from test_blocks import segments
    return costs(segments=segments(core_bytes=core))


def test_core_bytes_validation_and_fallback():
    import json

    from test_blocks import segments
    with pytest.raises(ValueError, match=r"core_bytes\[4\] = 999999 exceeds working_bytes = \d+ at length"):
        segments(core_bytes=(1, 2, 3, 4, 999999))
    with pytest.raises(ValueError, match="core_bytes has 2 entries"):
        segments(core_bytes=(1, 2))
    with pytest.raises(ValueError, match="-3"):
        segments(core_bytes=(1, 2, -3, 4, 5))
    plain = segments()
    assert plain.core_bytes is None and "core_bytes" not in plain.to_dict()
    assert plain.at("core_bytes", 8) == plain.at("working_bytes", 8)  # the upper bound
    lone = segments(core_bytes=tuple(w - 2 * HB for w in plain.working_bytes))
    assert lone.at("core_bytes", 8) == plain.at("working_bytes", 8) - 2 * HB
    c = costs(segments=lone)
    assert CostModel(**json.loads(json.dumps(c.to_dict()))) == c


def _dense_core():
    """Lone-core bytes at every length 1..16 (the synthetic working set less 2 states)."""
    return dict(core_lengths=tuple(range(1, 17)),
                core_bytes=tuple(10 * HB + 4 * HB * L - 2 * HB for L in range(1, 17)))


def test_core_lengths_validation_round_trip_and_pricing():
    import json

    from test_blocks import segments
    dense = segments(**_dense_core())
    assert dense.at("core_bytes", 9) == 10 * HB + 36 * HB - 2 * HB  # its own length's value
    assert dense.at("core_bytes", 16) == 10 * HB + 64 * HB - 2 * HB
    c = costs(segments=dense)
    assert CostModel(**json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="core_lengths is given but core_bytes is not"):
        segments(core_lengths=(1, 2, 4, 8, 16))
    with pytest.raises(ValueError, match=r"core_bytes has 3 entries; it needs one per length "
                                         r"in core_lengths"):
        segments(core_lengths=tuple(range(1, 17)), core_bytes=(1, 2, 3))
    with pytest.raises(ValueError, match="must run from 1 to the longest length 16"):
        segments(core_lengths=(1, 2, 3), core_bytes=(1, 2, 3))
    with pytest.raises(ValueError, match="strictly increasing|must be"):
        segments(core_lengths=(1, 3, 2, 16), core_bytes=(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"core_bytes\[8\] = 999999 exceeds working_bytes"):
        d = _dense_core()
        segments(core_lengths=d["core_lengths"],
                 core_bytes=d["core_bytes"][:8] + (999999,) + d["core_bytes"][9:])


@pytest.mark.parametrize("memory", ["45000B", "60000B", "90000B"])
def test_a_dense_core_grid_never_costs_more_and_fits(memory):
    """Lone-core bytes measured at every length (``core_lengths``) against the same bytes at
    the timed lengths only (each the dense value at that length, as the probe measured before):
    the chain plan is never predicted slower, its predicted peak is within the budget, and
    every chain's own core bytes fit beside the states stored above it."""
    from test_blocks import segments
    T = 97
    d = _dense_core()
    dense = segments(**d)
    timed = segments(core_bytes=tuple(int(dense.at("core_bytes", L)) for L in LENGTHS))
    a = membptt.plan("hsm", T, memory, costs=costs(segments=dense), planner="chains")
    b = membptt.plan("hsm", T, memory, costs=costs(segments=timed), planner="chains")
    assert a.predicted_cost <= b.predicted_cost + 1e-9
    assert a.predicted_peak_bytes <= a.budget.bytes
    assert max(y - x + 1 for x, y in a.chains) <= 16
    if memory != "90000B":  # there a 16-step chain fits either way
        # chains between the timed lengths, charged their own bytes: strictly cheaper
        assert a.predicted_cost < b.predicted_cost
        assert {y - x + 1 for x, y in a.chains} - set(LENGTHS)


@pytest.mark.usefixtures("one_torch_thread")
def test_dense_core_plan_measured_inside_budget():
    """On probed costs (the dense core grid), a tight budget gives chains of lengths that were
    never timed; the measured peak stays within the predicted one, and the same plan run in
    float64 gives plain autograd's gradients."""
    torch.manual_seed(0)
    T, B = 64, 8
    model = LSTMLanguageModel(16, 32, 16)
    x, y = synthetic_task(T, B, 16, dense=True)
    s0 = model.initial_state(B)
    c = membptt.probe(model, s0, (x, y), repeats=1, segment_lengths=(1, 4, 16))
    seg = c.segments
    assert seg.core_lengths == tuple(range(1, 17))
    b = int(seg.at("core_bytes", 10)) + 4 * c.hidden_bytes
    p = membptt.plan("hsm", T, f"{b}B", costs=c, planner="chains")
    assert {q - a + 1 for a, q in p.chains} - set(seg.lengths)  # chains off the timed lengths
    model.zero_grad(set_to_none=True)
    with LiveBytesTracker() as tr:
        bptt(model, s0, (x, y), p).backward()
    assert tr.peak_bytes <= p.predicted_peak_bytes <= p.budget.bytes
    m64 = model.double()
    s64 = tuple(t.double() for t in s0)
    m64.zero_grad(set_to_none=True)
    bptt(m64, s64, (x.double(), y), p).backward()
    got = [q.grad.clone() for q in m64.parameters()]
    m64.zero_grad(set_to_none=True)
    plain_bptt(m64, s64, (x.double(), y))[0].backward()
    for g, q in zip(got, m64.parameters()):
        assert torch.allclose(g, q.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("memory", ["30000B", "60000B"])
def test_a_smaller_lone_core_gives_slots_and_never_costs_more(memory):
    """Charging the lone core's working set (what an HSM chain holds) instead of linked
    chains' leaves more room for stored states: the plan is valid, within its budget by the
    lone-core bytes, and never more expensive than the one planned on working_bytes."""
    from test_blocks import segments
    T = 97
    big = membptt.plan("hsm", T, memory, costs=costs(), planner="chains")
    lone = tuple(w - 4 * HB for w in segments().working_bytes)
    small = membptt.plan("hsm", T, memory, costs=_with_core(lone), planner="chains")
    assert small.predicted_cost <= big.predicted_cost + 1e-9
    assert small.predicted_peak_bytes <= small.budget.bytes
    work = {L: w for L, w in zip(LENGTHS, lone)}
    assert small.predicted_peak_bytes - small.peak_bytes <= max(work.values())
    lo_big = membptt.min_memory("hsm", T, costs=costs(), planner="chains").bytes
    lo_small = membptt.min_memory("hsm", T, costs=_with_core(lone), planner="chains").bytes
    assert lo_small == lo_big - 4 * HB


@pytest.mark.usefixtures("one_torch_thread")
def test_probed_lone_core_is_at_most_the_linked_working_set_and_bounds_a_chain():
    """The probe measures core_bytes (one segment backpropagated alone) beside working_bytes
    (the largest over 1-3 linked segments); a lone chain's measured excess stays within it."""
    torch.manual_seed(0)
    T, B = 64, 8
    model = LSTMLanguageModel(16, 32, 16)
    x, y = synthetic_task(T, B, 16, dense=True)
    s0 = model.initial_state(B)
    rep = measure_step(model, s0, (x, y), repeats=1, chain=4, segment_lengths=(1, 4, 16))
    seg = rep.costs.segments
    # the lone core is measured at every chain length up to the longest timed one (16 here)
    assert seg.core_lengths == tuple(range(1, 17))
    assert len(seg.core_bytes) == 16
    assert all(0 < c <= seg.at("working_bytes", L)
               for L, c in zip(seg.core_lengths, seg.core_bytes))
    assert any(seg.at("core_bytes", L) < w for L, w in zip(seg.lengths, seg.working_bytes))
    assert list(seg.core_bytes) == sorted(seg.core_bytes)  # non-decreasing in length
    # between timed lengths a chain is charged its own core, not the next timed length's
    assert seg.at("core_bytes", 9) < seg.at("core_bytes", 16)
    p = membptt.plan("hsm", T, "25%", costs=rep.costs, planner="chains")
    model.zero_grad(set_to_none=True)
    with LiveBytesTracker() as tr:
        bptt(model, s0, (x, y), p).backward()
    assert tr.peak_bytes <= p.predicted_peak_bytes <= p.budget.bytes


def test_cli_block_chains(capsys, tmp_path):
    import json

    from membptt.cli import main

    path = tmp_path / "costs.json"
    path.write_text(json.dumps(costs().to_dict()))
    code = main(["plan", "--strategy", "hsm", "--seq-len", "40", "--memory", "60000B",
                 "--costs", str(path), "--planner", "chains", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["planner"] == "chains" and d["info"]["chains"] >= 1
    assert d["predicted_peak_bytes"] <= d["budget"]["bytes"]
    code = main(["plan", "--strategy", "ism", "--seq-len", "40", "--memory", "60000B",
                 "--costs", str(path), "--planner", "chains"])
    err = capsys.readouterr().err
    assert code == 2 and "does not apply to strategy 'ism'" in err


# -- CUDA (skipped without a GPU) ----------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cuda_chain_plans_equal_plain_autograd(kind):
    """Chain plans on CUDA: every chain runs as one fused cuDNN (or native) call with graph;
    gradients equal plain autograd's on the same device (float64)."""
    T = 37
    model, s0, inputs = _make(kind, T)
    model = model.cuda()
    s0 = (tuple(t.cuda() for t in s0) if kind == "lstm" else s0.cuda())
    inputs = tuple(t.cuda() for t in inputs)
    p = membptt.plan("hsm", T, "40000B", costs=costs(), planner="chains")
    err, st, got = _against_plain(model, s0, inputs, p)
    assert all(g.is_cuda for g in got)
    assert err <= 1e-10
    assert st.segment_calls == sum(1 for a, b in p.chains if b > a) > 0


def test_plan_shape_says_what_the_planner_built():
    chains = membptt.plan("hsm", 97, "60000B", costs=costs(), planner="chains")
    lens = [b - a + 1 for a, b in chains.chains]
    assert chains.shape == f"{len(lens)} chains of {min(lens)}-{max(lens)} steps"
    assert chains.shape in str(chains)
    blocks = membptt.plan("hsm", 97, "60000B", costs=costs(), planner="blocks", block=8)
    assert blocks.shape == "blocks of 8" and "blocks of 8" in str(blocks)
    steps = membptt.plan("hsm", 97, memory=20)
    assert steps.shape == "single steps" and "steps)" not in str(steps)
