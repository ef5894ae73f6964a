"""membptt.wrap against torch.utils.checkpoint for an encoder with attention pooling.

Workload (issue 20): ``out, _ = lstm(x)`` over ``T = 1000`` steps (``nn.LSTM(256, 256)``, dense
inputs, batch 64, float32, CPU), then attention pooling over *all* outputs, a linear layer and
a cross-entropy on one label per sequence: a loss that is not a sum over steps.

Methods, all in one process, interleaved round by round (medians over rounds after the first,
and the median of per-round ratios):

* ``plain``: autograd through the whole sequence;
* ``ckpt K``: ``torch.utils.checkpoint`` (non-reentrant) over ``K`` chunks of the ``nn.LSTM``
  (one fused call per chunk), outputs concatenated (a user's natural drop-in), ``K = 8, 16, 32``;
* ``wrap @ckpt K``: ``membptt.wrap(lstm, memory=M_K)`` with ``M_K`` the memory ``ckpt K`` uses
  for the recurrence (below);
* ``wrap f x<ckpt``: budgets below the smallest checkpoint's ``M_K`` (fractions ``f`` of it);
* with ``--tune``, ``tuned @ckpt K``: ``membptt.wrap(lstm, memory=M_K, tune=True)``, the
  candidate plans timed as calls of the module when it plans (not timed here).

Memory (live tensor bytes, the project's tracker
:class:`membptt.measure.tracker.LiveBytesTracker`, parameter gradients set to None first).
wrap's budget covers what it holds for the recurrence, not the outputs or what the caller
builds on them, and peaks of the recurrence and of the head do not add (they happen at
different times), so each method's *recurrence memory* is measured on its own: the peak of
``out = method(x); torch.autograd.backward(out, G)`` with ``G`` a fixed ``dL/dout`` made
beforehand, minus the bytes of ``out`` (the caller's tensor, the same for every method). For
``ckpt K`` that is ``M_K`` (its stored chunk-boundary states, one chunk's graph in backward,
and the transient of concatenating the chunks' outputs); wrap's is checked against its budget.
The peak of the whole encoder iteration (head included) is reported too.
The probe (once; its cost model is reused for every budget) is not timed::

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
                    "checkpoint's recurrence memory to run wrap at")
    ap.add_argument("--tune", action="store_true",
                    help="also run wrap(..., tune=True) at each checkpoint's memory "
                    "('tuned @ckpt K' rows: the candidates timed as calls when it plans)")
    ap.add_argument("--probe-repeats", type=int, default=5,
                    help="timing repeats of wrap's probe (the planner's costs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    T, H, B = args.seq_len, args.hidden, args.batch
    lstm = nn.LSTM(H, H)
    head = Head(H, 10)
    x = torch.randn(T, B, H)
    labels = torch.randint(0, 10, (B,))
    params = list(lstm.parameters()) + list(head.parameters())

    def zero():
        for p in params:
            p.grad = None

    G = torch.randn(T, B, H)  # a fixed dL/dout for the recurrence-only peaks
    out_bytes = T * B * H * 4

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

    def own(forward):  # the recurrence's memory: forward, then dL/dout = G, minus the outputs
        def it():
            torch.autograd.backward(forward(), G)
        return peak(it) - out_bytes

    ks = [int(k) for k in args.ks.split(",")]
    runs, peaks, owns, budgets = {"plain": plain}, {}, {}, {}
    owns["plain"] = own(lambda: lstm(x)[0])
    for K in ks:
        runs[f"ckpt {K}"] = ckpt(K)
        owns[f"ckpt {K}"] = own(lambda K=K: ckpt_forward(lstm, x, K))
    for name in list(runs):
        peaks[name] = peak(runs[name])
    costs = None
    wraps = {}
    for K in ks:
        budgets[f"wrap @ckpt {K}"] = owns[f"ckpt {K}"]
        if args.tune:
            budgets[f"tuned @ckpt {K}"] = owns[f"ckpt {K}"]
    smallest = min(owns[f"ckpt {K}"] for K in ks)
    for f in (float(v) for v in args.below.split(",") if v):
        budgets[f"wrap {f:g}x<ckpt"] = int(f * smallest)
    for name, b in list(budgets.items()):
        w = membptt.wrap(lstm, memory=f"{b}B", costs=costs, repeats=args.probe_repeats,
                         tune=name.startswith("tuned"))
        t0 = time.perf_counter()
        try:
            head(w(x)[0], labels).backward()  # probes once (costs reused after), plans
        except membptt.BudgetTooSmall as e:
            print(f"# {name}: memory={b / 2**20:.1f} MiB refused: {e}")
            del budgets[name]
            continue
        if costs is None:
            costs = w.info["costs"]
            print(f"# probe + plan + first iteration: {time.perf_counter() - t0:.1f} s")
        wraps[name] = w
        runs[name] = wrapped(w)
        owns[name] = own(lambda w=w: w(x)[0])
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
    print(f"\nT={T}, LSTM {H}, batch {B}, float32, {args.threads} threads, {args.rounds} "
          f"rounds; outputs {out_bytes / 2**20:.1f} MiB (the caller's, not in any budget)")
    # bytes in MiB, or KiB where every recurrence memory is below 8 MiB (launch-bound sizes)
    unit, uname = ((2**10, "KiB") if max(owns.values()) < 8 * 2**20 else (2**20, "MiB"))
    print(f"{'method':18s} {'median s':>8s} {'x plain':>7s} {'x ckpt':>7s} {'rec ' + uname:>8s} "
          f"{'budget':>7s} {'pred':>6s} {'iter ' + uname:>8s} {'fwd/step':>8s} {'block':>5s}")
    for name in runs:
        ref = f"ckpt {name.split()[-1]}" if " @ckpt " in name else None
        ratios = ([a / b for a, b in zip(times[name][1:], times[ref][1:])] if ref else None)
        r = f"{statistics.median(ratios):7.3f}" if ratios else f"{'':7s}"
        line = (f"{name:18s} {med[name]:8.4f} {med[name] / med['plain']:7.3f} {r} "
                f"{owns[name] / unit:8.1f}")
        if name in wraps:
            info = wraps[name].info
            line += (f" {budgets[name] / unit:7.1f} {info['predicted_peak_bytes'] / unit:6.1f}"
                     f" {peaks[name] / unit:8.1f} {info['forwards_per_step']:8.2f} "
                     f"{info['block'] or 1:5d}  rec <= budget: {owns[name] <= budgets[name]}")
        else:
            line += f" {'':7s} {'':6s} {peaks[name] / unit:8.1f}"
        print(line)
    print("\nper round (s):")
    for name, v in times.items():
        print(f"  {name:18s} {[round(t, 4) for t in v]}")


if __name__ == "__main__":
    main()
