"""membptt.wrap against torch.utils.checkpoint for an encoder with attention pooling.

Workload (issue 20): ``out, _ = lstm(x)`` over ``T = 1000`` steps (``nn.LSTM(256, 256)``, dense
inputs, batch 64, float32, CPU), then attention pooling over *all* outputs, a linear layer and
a cross-entropy on one label per sequence: a loss that is not a sum over steps.

Methods, all in one process, interleaved round by round (medians over rounds after the first,
and the median of per-round ratios):

* ``plain``: autograd through the whole sequence;
* ``ckpt K``: ``torch.utils.checkpoint`` (non-reentrant) over ``K`` chunks of the ``nn.LSTM``
  (one fused call per chunk), outputs concatenated (a user's natural drop-in), ``K = 8, 16, 32``;
* ``wrap @ckpt K``: ``membptt.wrap(lstm, memory=...)`` with the memory ``ckpt K`` used: its
  measured peak minus the caller's bytes (the measured peak of the head alone, on outputs made
  without a graph and a backward that ends in ``dL/dout``: the outputs, the head's graph and
  ``dL/dout``, which wrap's budget does not cover and which every method holds), so that
  wrap's whole iteration should peak at or below ``ckpt K``'s;
* ``wrap <ckpt``: budgets below the smallest checkpoint peak (fractions of its membptt part).

Peaks are live tensor bytes of one whole iteration (forward, head, backward) measured with the
project's tracker (:class:`membptt.measure.tracker.LiveBytesTracker`), parameter gradients set
to None first. The probe (once; its cost model is reused for every budget) is not timed::

    .venv/bin/python benchmarks/bench_wrap.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import membptt
from membptt.measure.memory import tracked_peak


class Head(nn.Module):
    def __init__(self, hidden, classes):
        super().__init__()
        self.v = nn.Parameter(torch.randn(hidden) / hidden ** 0.5)
        self.out = nn.Linear(hidden, classes)

    def forward(self, out, labels):  # out: (T, B, H)
        a = torch.softmax(out @ self.v, dim=0)  # attention over time
        pooled = (a.unsqueeze(-1) * out).sum(0)
        return F.cross_entropy(self.out(pooled), labels)


class _Sink(torch.autograd.Function):
    """Identity whose backward receives dL/dout and drops it: what the recurrence gets."""

    @staticmethod
    def forward(ctx, out, _):
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g):
        return None, None


def ckpt_forward(lstm, x, K):
    T = x.shape[0]
    bounds = [round(i * T / K) for i in range(K + 1)]
    h = None
    outs = []
    for a, b in zip(bounds, bounds[1:]):
        if h is None:
            o, h = checkpoint(lambda xc: lstm(xc), x[a:b], use_reentrant=False)
        else:
            o, h = checkpoint(lambda xc, h0, c0: lstm(xc, (h0, c0)), x[a:b], *h,
                              use_reentrant=False)
        outs.append(o)
    return torch.cat(outs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ks", default="8,16,32")
    ap.add_argument("--below", default="0.5,0.25", help="fractions of the smallest "
                    "checkpoint's membptt part to run wrap at")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    T, H, B = args.seq_len, args.hidden, args.batch
    lstm = nn.LSTM(H, H)
    head = Head(H, 10)
    x = torch.randn(T, B, H)
    labels = torch.randint(0, 10, (B,))
    params = list(lstm.parameters()) + list(head.parameters())
    sink = torch.empty(0, requires_grad=True)

    def zero():
        for p in params:
            p.grad = None

    def outputs_no_graph():
        with torch.no_grad():
            return lstm(x)[0]

    def head_only():  # the caller's part: outputs without a graph, the head, dL/dout
        # (no Python reference to the outputs: the head's graph frees them as it goes, as
        # in every method's iteration)
        head(_Sink.apply(outputs_no_graph(), sink), labels).backward()

    def plain():
        out, _ = lstm(x)
        head(out, labels).backward()

    def ckpt(K):
        return lambda: head(ckpt_forward(lstm, x, K), labels).backward()

    def wrapped(w):
        return lambda: head(w(x)[0], labels).backward()

    def peak(fn):
        zero()
        fn()  # warm (and plan, for a wrap)
        zero()
        p, left, _ = tracked_peak(fn)
        return p

    ks = [int(k) for k in args.ks.split(",")]
    caller = peak(head_only)
    runs, peaks, budgets = {"plain": plain}, {}, {}
    for K in ks:
        runs[f"ckpt {K}"] = ckpt(K)
    for name in list(runs):
        peaks[name] = peak(runs[name])
    costs = None
    wraps = {}
    for K in ks:
        budgets[f"wrap @ckpt {K}"] = peaks[f"ckpt {K}"] - caller
    smallest = min(peaks[f"ckpt {K}"] for K in ks) - caller
    for f in (float(v) for v in args.below.split(",") if v):
        budgets[f"wrap {f:g}x<ckpt"] = int(f * smallest)
    for name, b in list(budgets.items()):
        w = membptt.wrap(lstm, memory=f"{b}B", costs=costs)
        t0 = time.perf_counter()
        try:
            head(w(x)[0], labels).backward()  # probes once (costs reused after), plans
        except membptt.BudgetTooSmall as e:
            print(f"# {name}: memory={b / 2**20:.1f} MiB refused: {e}")
            del budgets[name]
            continue
        if costs is None:
            costs = w.info["costs"]
            print(f"# probe + plan: {time.perf_counter() - t0:.1f} s")
        wraps[name] = w
        runs[name] = wrapped(w)
        peaks[name] = peak(runs[name])
        print(f"# {name}: memory={b / 2**20:.1f} MiB -> {w.info['summary']}")
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            zero()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v[1:] if len(v) > 1 else v) for k, v in times.items()}
    print(f"\ncaller's bytes (outputs, head graph, dL/dout; head alone): {caller / 2**20:.1f} MiB")
    print(f"T={T}, LSTM {H}, batch {B}, float32, {args.threads} threads, {args.rounds} rounds")
    print(f"{'method':18s} {'median s':>8s} {'x plain':>7s} {'x ckpt':>7s} {'peak MiB':>8s} "
          f"{'budget MiB':>10s} {'peak-caller':>11s} {'pred MiB':>8s} {'fwd/step':>8s} "
          f"{'block':>5s}")
    for name in runs:
        ref = None
        if name.startswith("wrap @ckpt"):
            ref = f"ckpt {name.split()[-1]}"
        ratios = ([a / b for a, b in zip(times[name][1:], times[ref][1:])] if ref else None)
        r = f"{statistics.median(ratios):7.3f}" if ratios else f"{'':7s}"
        line = (f"{name:18s} {med[name]:8.3f} {med[name] / med['plain']:7.3f} {r} "
                f"{peaks[name] / 2**20:8.1f}")
        if name in wraps:
            info = wraps[name].info
            line += (f" {budgets[name] / 2**20:10.1f} {(peaks[name] - caller) / 2**20:11.1f} "
                     f"{info['predicted_peak_bytes'] / 2**20:8.1f} "
                     f"{info['forwards_per_step']:8.2f} {info['block'] or 1:5d}")
            if ref:
                line += f"   peak <= ckpt's: {peaks[name] <= peaks[ref]}"
            line += f"   peak-caller <= budget: {peaks[name] - caller <= budgets[name]}"
        print(line)
    print("\nper round (s):")
    for name, v in times.items():
        print(f"  {name:18s} {[round(t, 3) for t in v]}")


if __name__ == "__main__":
    main()
