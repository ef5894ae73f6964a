"""What splitting one backward into several autograd.backward calls costs.

The executor backpropagates a plan's stored segments (chains of consecutive internal states)
with one torch.autograd.backward call each; before chains it made one call per step. This
script measures the pattern without membptt: LSTMCell + linear head + cross-entropy, T = 1000,
B = 64, H = 256, 2 threads. The graph is built with a detached leaf for h every ``L`` steps
(L = T: plain BPTT's single graph; L = 37: MSM's segments at 5 % memory; L = 1: one call per
step), then backpropagated segment by segment, last first. Interleaved rounds; medians of the
backward time, and of the whole iteration:

    .venv/bin/python benchmarks/bench_backward_overhead.py [--rounds 9] [--keep-freed-memory]

``--keep-freed-memory`` applies ``membptt.measure.alloc.keep_freed_memory()`` first (glibc
keeps freed memory instead of returning it to the system).
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

T, B, H = 1000, 64, 256


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--segments", default="1000,37,1", help="segment lengths L to compare")
    ap.add_argument("--keep-freed-memory", action="store_true")
    args = ap.parse_args(argv)
    if args.keep_freed_memory:
        from membptt.measure.alloc import keep_freed_memory

        print(f"# {keep_freed_memory()}")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(H, H)
    head = torch.nn.Linear(H, H)
    x = torch.randn(T, B, H)
    y = torch.randint(0, H, (T, B))

    def build(L):
        """Forward with graph; a detached leaf for h every L steps. Returns the segments."""
        segs, h = [], (torch.zeros(B, H), torch.zeros(B, H))
        for a in range(0, T, L):
            hin = tuple(t.detach().requires_grad_() for t in h)
            hh, losses = hin, []
            for t in range(a, min(a + L, T)):
                hh = cell(x[t], hh)
                losses.append(F.cross_entropy(head(hh[0]), y[t], reduction="sum"))
            segs.append((hin, losses, hh))
            h = tuple(t.detach() for t in hh)
        return segs

    def backward(segs):
        dh, one = None, torch.ones(())
        while segs:
            hin, losses, out = segs.pop()
            ts, gs = list(losses), [one] * len(losses)
            if dh is not None:
                ts += list(out)
                gs += list(dh)
            torch.autograd.backward(ts, gs)
            dh = tuple(t.grad for t in hin)

    lengths = [int(s) for s in args.segments.split(",")]
    res = {L: ([], []) for L in lengths}
    for L in lengths:  # warm-up, .grad allocated
        backward(build(L))
    for _ in range(args.rounds):
        for L in lengths:
            cell.zero_grad(set_to_none=False)
            head.zero_grad(set_to_none=False)
            t0 = time.perf_counter()
            segs = build(L)
            t1 = time.perf_counter()
            backward(segs)
            t2 = time.perf_counter()
            res[L][0].append(t2 - t1)
            res[L][1].append(t2 - t0)
    base_b = statistics.median(res[lengths[0]][0])
    base_t = statistics.median(res[lengths[0]][1])
    print(f"{'segment L':>9} {'calls':>6} {'backward_s':>10} {'x':>6} {'iteration_s':>11} {'x':>6}")
    for L in lengths:
        b, t = statistics.median(res[L][0]), statistics.median(res[L][1])
        print(f"{L:>9} {-(-T // L):>6} {b:10.3f} {b / base_b:6.3f} {t:11.3f} {t / base_t:6.3f}")


if __name__ == "__main__":
    main()
