"""Long sequences: the plan class the long-sequence benchmark runs (``benchmarks/bench_long.py``:
the front door under a fixed byte budget picks fused blocks there), checked where plain
autograd is cheap: T = 2,000 in float64, gradients equal plain BPTT's."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import membptt  # noqa: E402
from membptt.execution import plain_bptt  # noqa: E402
from membptt.measure import WorkloadConfig, make_workload  # noqa: E402


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("strategy,block", [("msm", 63), ("msm", 125), ("hsm", 125)])  # measured
def test_long_block_plans_have_exact_gradients(strategy, block):
    T = 2000
    w = make_workload(WorkloadConfig(model="lstm", seq_len=T, hidden=8, batch=2, input_size=4,
                                     classes=5, dtype="float64"))
    costs = membptt.probe(w.step_fn, w.state0, w.inputs)
    p = membptt.plan(strategy, T, "15%", costs=costs, block=block)
    assert p.planner == "blocks" and p.block == block and p.segment_ends[-1] == T
    assert p.predicted_peak_bytes <= p.budget.bytes
    w.zero_grad()
    loss_ref, _ = plain_bptt(w.step_fn, w.state0, w.inputs)
    loss_ref.backward()
    ref = [q.grad.clone() for q in w.parameters()]
    w.zero_grad()
    loss = membptt.bptt(w.step_fn, w.state0, w.inputs, p)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(loss_ref.detach()), rel=1e-12)
    for g, r in zip((q.grad for q in w.parameters()), ref):
        assert float((g - r).abs().max()) <= 1e-10 * max(1.0, float(r.abs().max()))
