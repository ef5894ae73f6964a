"""The live-tensor tracker against analytically known byte counts; the timing statistics."""

import pytest
import torch

from membptt.measure import LiveBytesTracker, time_interleaved
from membptt.measure.timing import TimingResult

B, H, T = 8, 16, 12
F32 = 4


def test_plain_allocations_and_frees():
    with LiveBytesTracker() as tr:
        x = torch.empty(1000, dtype=torch.float32)
        y = torch.empty(10, dtype=torch.float64)
        del x
        assert tr.current_bytes == 80
        del y
    assert tr.peak_bytes == 4080
    assert tr.current_bytes == 0


def test_storing_T_states_is_T_times_state_bytes():
    with LiveBytesTracker() as tr:
        states = [torch.zeros(B, H) for _ in range(T)]
        assert tr.current_bytes == T * B * H * F32
        del states
    assert tr.peak_bytes == T * B * H * F32
    assert tr.current_bytes == 0


def test_views_inplace_and_preexisting_tensors_are_not_counted():
    big = torch.randn(100, 100)
    with LiveBytesTracker() as tr:
        v = big.view(-1)
        r = big[3]
        big.add_(1.0)
        d = big.detach()
        t = big.t()
    assert tr.peak_bytes == 0
    del v, r, d, t


def test_resize_of_a_tracked_storage_is_measured():
    with LiveBytesTracker() as tr:
        x = torch.empty(0)
        x.resize_(250)
        assert tr.current_bytes == 1000
    assert tr.peak_bytes == 1000


def test_sees_autograd_saved_tensors():
    """h_t = tanh(h_{t-1} @ W): autograd keeps every tanh output (its backward needs it).

    Each step allocates the matmul output (freed once tanh has consumed it: mm saves its
    *inputs*, which are the previous tanh output and W) and the tanh output (saved). So after T
    steps exactly T states are live, and the forward peak is T states plus one transient.
    """
    W = torch.randn(H, H, requires_grad=True)
    h0 = torch.randn(B, H)
    with LiveBytesTracker() as tr:
        h = h0
        for _ in range(T):
            h = torch.tanh(h @ W)
        assert tr.current_bytes == T * B * H * F32
        assert tr.peak_bytes == (T + 1) * B * H * F32
        loss = h.sum()
        forward_peak = tr.peak_bytes
        loss.backward()
        del h, loss
    # after backward only the gradient of W survives; the backward made temporaries
    assert tr.current_bytes == H * H * F32 == W.grad.nbytes
    assert tr.peak_bytes >= forward_peak
    assert tr.allocated_bytes > 2 * T * B * H * F32  # forward + backward temporaries were seen


def test_backward_temporaries_are_seen():
    """A backward that creates a large temporary shows it in the peak."""
    x = torch.randn(256, requires_grad=True)
    c = torch.randn(1000, 256)
    with LiveBytesTracker() as tr:
        y = (x * c).sum()  # the backward of mul materialises grad * c, a (1000, 256) tensor
        tr.reset_peak()
        y.backward()
    assert tr.peak_bytes >= 1000 * 256 * F32


def test_timing_interleaved_counts_and_stats():
    calls = []
    res = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                           repeats=4, warmup=2)
    assert calls.count("a") == calls.count("b") == 6
    assert calls[4:6] == ["a", "b"] and calls[6:8] == ["b", "a"]  # rotated each round
    assert res["a"].repeats == 4 and res["a"].warmup == 2


def test_timing_records_each_calls_own_duration(monkeypatch):
    """With a fake clock: every sample is exactly the time its own call took, in round order."""
    import membptt.measure.timing as timing

    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    durations = {"a": iter([9.0, 1.0, 2.0, 3.0, 4.0]), "b": iter([9.0, 10.0, 20.0, 30.0, 40.0])}

    def call(name):
        def fn():
            now[0] += next(durations[name])
        return fn

    res = time_interleaved({"a": call("a"), "b": call("b")}, repeats=4, warmup=1)
    assert res["a"].samples == [1.0, 2.0, 3.0, 4.0]  # the warm-up's 9.0 is not a sample
    assert res["b"].samples == [10.0, 20.0, 30.0, 40.0]
    assert res["a"].median == 2.5 and res["b"].iqr == pytest.approx(15.0)


def test_timing_quantiles():
    r = TimingResult([4.0, 1.0, 3.0, 2.0])
    assert r.median == 2.5 and r.q1 == pytest.approx(1.75) and r.q3 == pytest.approx(3.25)
    assert r.iqr == pytest.approx(1.5) and r.min == 1.0
    with pytest.raises(ValueError):
        time_interleaved({"a": lambda: None}, repeats=0)
