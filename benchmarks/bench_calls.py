"""What one call costs: the executor's instructions beside ``torch.utils.checkpoint``'s segments.

Where every call is dear (small models and batches on a CPU, any GPU at the paper's sizes) a
plan's time is its number of calls times what each costs. This script measures, at tiny sizes
(by default the launch-bound preset of ``bench_peers.py``: T = 1000, input 16, LSTM 16, 16
classes, batch 2, float32, 1 thread), in one process with every quantity timed round-robin
(medians over rounds; within a round each call is repeated ``--reps`` times):

1. **Instructions**, in microseconds per call, each beside the model's own call that it wraps:

   * ``run 1`` / ``run L``: a graph-free run of 1 / ``L`` steps, ``Executor.run`` against
     ``step.advance`` under ``no_grad``;
   * ``graph+back 1`` / ``graph+back L``: a forward with graph of 1 / ``L`` steps and its
     backward, ``Executor.graph`` + ``Executor.backward`` against ``step.segment`` (or the
     step) with ``torch.autograd.backward`` on the summed loss and the state's gradient.

   ``L`` is the checkpoint's segment length at ``K = 8`` (``ceil(T / 8)``). The difference is
   what the executor adds per call.

2. **Per segment**: one training iteration (forward and backward) of
   ``torch.utils.checkpoint`` over ``K`` fused segments (reentrant, ``bench_peers``'s front)
   and of membptt running exactly that schedule (HSM on blocks of ``ceil(T / K)`` steps with
   memory for every bound), for ``K`` in ``--ks``; the least-squares line of time against
   ``K`` gives each one's cost per segment (its slope: a segment is a graph-free call in the
   first sweep, a recomputation with graph and a backward) and the rest (its intercept).
   Beside them the same membptt plan with its graph-free runs at the step's own split
   (``fused_chunk``-step calls, the head on ``loss_chunk`` steps at a time) instead of the
   planned chunk lengths (``Plan.prediction.run_cap``, printed as ``run cap``): what planning
   the calls changed, in the same process.

::

    .venv/bin/python benchmarks/bench_calls.py                 # the launch-bound preset
    .venv/bin/python benchmarks/bench_calls.py --hidden 256 --input-size 256 --classes 256 \\
        --batch 64 --threads 2 --ks 8,16,32                    # the paper's sizes

Times are medians; ratios inside this one process only. Nothing here is asserted: the numbers
are printed (and written to ``--out`` as CSV when given).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import membptt
from membptt.execution import Executor
from membptt.measure.methods import make_method
from membptt.measure.workload import WorkloadConfig, make_workload

SPLIT = "step's split"


def _timer(fn, reps: int):
    def timed():
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps
    return timed


def instructions(w, L: int, reps: int):
    """{name: timed callable} of the instruction kinds and the model calls they wrap."""
    model = w.model
    ex = Executor(w.step_fn, w.state0, w.inputs, preserve_rng_state=False)
    h1, _ = ex.run(ex.start(), 1, 1)
    h1 = tuple(t.detach().clone() for t in h1)
    xs = ex.inputs_of(2, 1 + L)
    x1 = ex.inputs_of(2, 2)
    params = [p for p in model.parameters() if p.requires_grad]
    one = torch.ones(())
    ex.gloss = one

    def run_ex(n):
        return lambda: ex.run(h1, 2, 1 + n)

    def run_raw(x):
        def f():
            with torch.no_grad():
                model.advance(ex.user(h1), x, False)
        return f

    def graph_ex(n):
        def f():
            rec = ex.graph(h1, 2, 1 + n) if n > 1 else ex.graph(h1, 2)
            ex.backward([rec], dh=tuple(torch.zeros_like(t) for t in h1), gloss=one)
            ex.reset()
        return f

    def graph_raw(x, n):
        def f():
            h = tuple(t.detach().requires_grad_() for t in h1)
            with torch.enable_grad():
                if n > 1:
                    out, loss = model.segment(ex.user(h), x)
                else:
                    out, loss = model(ex.user(h), ex.xsteps[1])
            outs = [loss] + list(ex._as_flat(out))
            grads = [one] + [torch.zeros_like(t) for t in h1]
            torch.autograd.backward(outs, grads, inputs=params + list(h))
        return f

    for p in params:  # accumulation in place from the first call on, as in an iteration
        p.grad = torch.zeros_like(p)
    return {
        "run 1: Executor.run": _timer(run_ex(1), reps),
        "run 1: step.advance": _timer(run_raw(x1), reps),
        f"run {L}: Executor.run": _timer(run_ex(L), reps),
        f"run {L}: step.advance": _timer(run_raw(xs), reps),
        "graph+back 1: Executor": _timer(graph_ex(1), reps),
        "graph+back 1: step + autograd": _timer(graph_raw(x1, 1), reps),
        f"graph+back {L}: Executor": _timer(graph_ex(L), reps),
        f"graph+back {L}: step.segment + autograd": _timer(graph_raw(xs, L), reps),
    }


def iterations(w, ks, seq_len):
    """{name: timed callable}: one iteration of the checkpoint over K fused segments and of
    membptt on the same schedule, for every K."""
    out = {}
    for k in ks:
        ck = make_method(f"torch-checkpoint-fused-reentrant:segments={k}", w)
        ck.prepare()
        out[("checkpoint", k)] = ck
        block = -(-seq_len // k)
        mb = make_method(f"hsm-measured:planner=blocks:block={block}:memory=1GiB", w)
        mb.prepare()
        out[("membptt", k)] = mb
        # the same plan with graph-free runs at the step's own split (``fused_chunk`` calls,
        # the head on ``loss_chunk`` steps): what planned chunk lengths changed
        split = make_method(f"hsm-measured:planner=blocks:block={block}:memory=1GiB", w)
        split.prepare()
        split.plan = dataclasses.replace(
            split.plan, prediction=dataclasses.replace(split.plan.prediction, run_cap=None))
        out[(SPLIT, k)] = split
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--input-size", type=int, default=16)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=50, help="calls per instruction per round")
    ap.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")],
                    default=[8, 16, 32, 64, 128])
    ap.add_argument("--out", type=Path, default=None, help="CSV of the medians")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    w = make_workload(WorkloadConfig(seq_len=args.seq_len, hidden=args.hidden,
                                     batch=args.batch, input_size=args.input_size,
                                     classes=args.classes))
    L = -(-args.seq_len // 8)
    ins = instructions(w, L, args.reps)
    its = iterations(w, args.ks, args.seq_len)
    samples = {k: [] for k in list(ins) + list(its)}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, f in ins.items():
            samples[name].append(f())
        for key, m in its.items():
            w.zero_grad()
            t0 = time.perf_counter()
            m.run()
            samples[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v[1:]) for k, v in samples.items()}
    print(f"[calls] membptt {membptt.__version__} from {Path(membptt.__file__).parent}; torch "
          f"{torch.__version__}; T={args.seq_len}, LSTM {args.hidden}, batch {args.batch}, "
          f"{args.threads} thread(s); medians of {args.rounds} rounds x {args.reps} calls\n")
    print(f"{'instruction':44s} {'us/call':>9s}")
    names = list(ins)
    for i in range(0, len(names), 2):
        a, b = names[i], names[i + 1]
        print(f"{a:44s} {med[a] * 1e6:9.1f}")
        print(f"{b:44s} {med[b] * 1e6:9.1f}   (executor adds {(med[a] - med[b]) * 1e6:+.1f})")
    def per_round(a, b):
        return statistics.median(x / y for x, y in zip(samples[a][1:], samples[b][1:]))

    print(f"\n{'K':>5s} {'checkpoint ms':>14s} {'membptt ms':>11s} {'ratio':>6s} "
          f"{'run cap':>7s} {'step split ms':>14s} {'ratio':>6s} {'planned/split':>13s}")
    for k in args.ks:
        c, m, u = med[("checkpoint", k)], med[("membptt", k)], med[(SPLIT, k)]
        cap = its[("membptt", k)].plan.prediction.run_cap
        print(f"{k:5d} {c * 1e3:14.3f} {m * 1e3:11.3f} "
              f"{per_round(('membptt', k), ('checkpoint', k)):6.3f} {str(cap):>7s} "
              f"{u * 1e3:14.3f} {per_round((SPLIT, k), ('checkpoint', k)):6.3f} "
              f"{per_round(('membptt', k), (SPLIT, k)):13.3f}")
    rows = []
    for who in ("checkpoint", "membptt", SPLIT):
        xs = [float(k) for k in args.ks]
        ys = [med[(who, k)] for k in args.ks]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
                 / sum((x - mx) ** 2 for x in xs))
        print(f"{who:>10s}: {slope * 1e6:8.1f} us per segment, {(my - slope * mx) * 1e3:7.3f} ms "
              "the rest (least squares over K)")
        rows.append({"what": f"{who} per segment", "us": slope * 1e6})
    if args.out:
        rows += [{"what": k if isinstance(k, str) else f"{k[0]} K={k[1]}", "us": v * 1e6}
                 for k, v in med.items()]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + f".tmp{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=["what", "us"])
            wr.writeheader()
            wr.writerows(rows)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
