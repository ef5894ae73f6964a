"""Executor speed and memory against plain autograd BPTT (issue 3's speed targets).

LSTM language-model step (dense one-hot input of size ``--input``, ``nn.LSTMCell``, linear head,
per-step cross-entropy), float32, on this machine's CPU (or ``--device cuda``). In one process,
interleaved round by round, each round timing one training iteration (forward + backward) of:

* ``plain``       plain autograd BPTT with the same cell (every step's graph kept);
* ``full``        the executor running the ``full`` plan (same memory as plain);
* ``msm-paper``   MSM at ``--budget`` % of plain BPTT's measured activation bytes, planned on
                  unit costs (the paper's DP; alpha/beta from probed sizes), steps one by one;
* ``msm-fused``   MSM at the same byte budget, planned on probed costs (seconds), graph-free runs
                  fused (``nn.LSTM`` sharing the cell's weights).

Prints medians over ``--rounds`` rounds, the ratios to ``plain``, the time each plan's cost model
predicts from probed costs, and the live tensor bytes each method holds at its peak (measured
once, with the tensor-level tracker, outside the timed rounds).

    .venv/bin/python benchmarks/bench_executor.py                 # the issue's sizes (slow)
    .venv/bin/python benchmarks/bench_executor.py --seq-len 200   # quicker
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from membptt.execution import bptt, measure_step, plain_bptt
from membptt.execution.memtrack import LiveBytesTracker
from membptt.models import LSTMLanguageModel, synthetic_task
from membptt.planning import CostModel, plan, simulate_ops


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--input", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--budget", type=float, default=5.0, help="percent of plain BPTT's bytes")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default="plain,full,msm-paper,msm-fused")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    T = args.seq_len
    model = LSTMLanguageModel(args.input, args.hidden, args.input).to(dev)
    x, y = synthetic_task(T, args.batch, args.input, dense=True, seed=args.seed, device=dev)
    inputs = (x, y)
    s0 = model.initial_state(args.batch)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    print(f"# torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, "
          f"T={T}, H={args.hidden}, input={args.input}, B={args.batch}, float32")

    # probe (steps one by one, and fused runs)
    rep_loop = measure_step(model, s0, inputs, fused=False)
    rep_fused = measure_step(model, s0, inputs, fused=True)
    c_loop, c_fused = rep_loop.costs, rep_fused.costs
    print(f"# probe: hidden {rep_loop.hidden_bytes} B, internal {rep_loop.internal_bytes} B "
          f"(alpha {rep_loop.alpha:.3f}), beta {rep_loop.beta_bytes} B "
          f"(beta {rep_loop.beta:.3f}), working set {rep_loop.working_bytes} B")
    print(f"# probe: forward_graph {c_loop.forward_graph * 1e3:.3f} ms, backward "
          f"{c_loop.backward * 1e3:.3f} ms, loop run {c_loop.run_fixed * 1e3:.3f} + "
          f"k*{c_loop.run_per_step * 1e3:.3f} ms, fused run {c_fused.run_fixed * 1e3:.3f} + "
          f"k*{c_fused.run_per_step * 1e3:.3f} ms")

    # plain BPTT's activation bytes (tracker), with .grad allocated beforehand
    def plain_iter():
        loss, _ = plain_bptt(model, s0, inputs)
        loss.backward()

    plain_iter()
    model.zero_grad(set_to_none=False)
    with LiveBytesTracker() as mt:
        plain_iter()
    act = mt.peak_bytes
    budget = int(args.budget / 100 * act)
    print(f"# plain BPTT peak live bytes {act} ({act / 2**20:.1f} MiB); budget {args.budget}% "
          f"= {budget} B")

    sizes = dict(hidden_bytes=c_loop.hidden_bytes, internal_bytes=c_loop.internal_bytes,
                 beta_bytes=c_loop.beta_bytes)
    plans = {
        "full": (plan("full", T, costs=c_loop), c_loop, False),
        "msm-paper": (plan("msm", T, f"{budget}B", costs=CostModel(**sizes)), c_loop, False),
        "msm-fused": (plan("msm", T, f"{budget}B", costs=c_fused), c_fused, True),
    }
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    runners = {"plain": plain_iter}
    predicted = {"plain": T * (c_loop.forward_graph + c_loop.backward)}
    peaks = {"plain": act}
    for name, (p, c, fused) in plans.items():
        def run(p=p, fused=fused):
            loss = bptt(model, s0, inputs, p, fused=fused)
            loss.backward()

        runners[name] = run
        sim = simulate_ops(p.ops, T, alpha=p.alpha or 1, beta=p.beta, costs=c)
        predicted[name] = sim.predicted_cost
        if name in methods:
            run()
            model.zero_grad(set_to_none=False)
            with LiveBytesTracker() as mt:
                run()
            peaks[name] = mt.peak_bytes
        print(f"# {name}: {p}; C/T = {p.forward_ops / T:.3f}; predicted peak "
              f"{p.peak_bytes} B")

    times = {m: [] for m in methods}
    for r in range(args.rounds):
        for m in methods:
            model.zero_grad(set_to_none=False)
            sync()
            t0 = time.perf_counter()
            runners[m]()
            sync()
            times[m].append(time.perf_counter() - t0)
        print(f"# round {r + 1}: " + ", ".join(f"{m} {times[m][-1]:.3f}s" for m in methods),
              flush=True)

    base = statistics.median(times["plain"]) if "plain" in times else None
    print(f"{'method':<10} {'median_s':>9} {'x_plain':>8} {'pred_s':>8} {'meas/pred':>9} "
          f"{'peak_bytes':>11} {'x_plain_mem':>11}")
    for m in methods:
        med = statistics.median(times[m])
        ratio = f"{med / base:8.3f}" if base else f"{'-':>8}"
        mem = peaks.get(m)
        memr = f"{mem / act:11.4f}" if mem is not None else f"{'-':>11}"
        print(f"{m:<10} {med:9.3f} {ratio} {predicted[m]:8.3f} {med / predicted[m]:9.3f} "
              f"{mem if mem is not None else '-':>11} {memr}")


if __name__ == "__main__":
    main()
