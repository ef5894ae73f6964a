"""How much one autograd.backward call per step costs against one backward over the graph.

The executor backpropagates step by step (like reentrant checkpointing): a detached leaf for
h_{i-1}, one torch.autograd.backward((loss_i, h_i, c_i), (1, dh, dc)) per step. This script
measures that pattern without membptt (LSTMCell + linear head + cross-entropy, T = 1000,
B = 64, H = 256, 2 threads), interleaved with plain BPTT, medians of 5:

    .venv/bin/python benchmarks/bench_backward_overhead.py
"""

import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)
T, B, H = 1000, 64, 256
cell = torch.nn.LSTMCell(H, H)
head = torch.nn.Linear(H, H)
params = list(cell.parameters()) + list(head.parameters())
x = torch.randn(T, B, H)
y = torch.randint(0, H, (T, B))


def step(h, t):
    h2, c2 = cell(x[t], h)
    return (h2, c2), F.cross_entropy(head(h2), y[t], reduction="sum")


def plain():
    for p in params:
        p.grad = None
    h, total = (torch.zeros(B, H), torch.zeros(B, H)), 0
    for t in range(T):
        h, loss = step(h, t)
        total = total + loss
    total.backward()


def per_step():
    for p in params:
        p.grad = None
    h, recs = (torch.zeros(B, H), torch.zeros(B, H)), []
    for t in range(T):
        hin = tuple(a.detach().requires_grad_() for a in h)
        out, loss = step(hin, t)
        recs.append((hin, out, loss))
        h = tuple(o.detach() for o in out)
    dh = None
    one = torch.ones(())
    while recs:
        hin, out, loss = recs.pop()
        if dh is None:
            torch.autograd.backward([loss], [one])
        else:
            torch.autograd.backward([loss, out[0], out[1]], [one, dh[0], dh[1]])
        dh = (hin[0].grad, hin[1].grad)


def main():
    fns = {"plain BPTT (one backward)": plain, "one backward per step": per_step}
    for f in fns.values():
        f()
    res = {k: [] for k in fns}
    for _ in range(5):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            res[k].append(time.perf_counter() - t0)
    base = statistics.median(res["plain BPTT (one backward)"])
    for k, v in res.items():
        print(f"{k:28s} median {statistics.median(v):.3f} s  x{statistics.median(v) / base:.3f}")


if __name__ == "__main__":
    main()
