"""Executor speed and memory against plain autograd BPTT (issue 3's speed targets).

LSTM language-model step (dense one-hot input of size ``--input``, ``nn.LSTMCell``, linear head,
per-step cross-entropy), float32, on this machine's CPU (or ``--device cuda``). In one process,
interleaved round by round, each round timing one training iteration (forward + backward) of:

* ``plain``       plain autograd BPTT with the same cell (every step's graph kept);
* ``full``        the executor running the ``full`` plan (same memory as plain);
* ``msm-paper``   MSM at ``--budget`` % of plain BPTT's measured activation bytes, planned on
                  unit costs (the paper's DP; alpha/beta from probed sizes), steps one by one;
* ``msm-paper-fused``  the same plan, graph-free runs fused (``nn.LSTM`` sharing the cell's
                  weights; what ``membptt.bptt`` does by default for this model);
* ``msm-fused``   MSM at the same byte budget, planned on probed costs (seconds; on fused
                  blocks when the step offers ``segment``), graph-free runs fused.

The unit-cost plans get the budget minus the probed working set (what the executor holds beyond
a plan's stored states); ``msm-fused`` gets the whole budget, since a probed cost model carries
the working set and the planner subtracts it itself. The measured peak stays within the budget.

Prints medians over ``--rounds`` rounds (total, forward call, backward call), the ratio of
medians to ``plain`` and the median over rounds of the per-round ratio, the time each plan's
cost model predicts from probed costs, and the live tensor bytes each method holds at its peak
(measured once, with the tensor-level tracker, outside the timed rounds).

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
    ap.add_argument("--methods", default="plain,full,msm-paper,msm-paper-fused,msm-fused")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fused-chunk", type=int, default=64,
                    help="steps per fused nn.LSTM call in graph-free runs")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="glibc malloc keeps freed memory (membptt.measure.alloc), for every "
                         "method alike")
    args = ap.parse_args(argv)
    if args.keep_freed_memory:
        from membptt.measure.alloc import keep_freed_memory

        print(f"# {keep_freed_memory()}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    T = args.seq_len
    model = LSTMLanguageModel(args.input, args.hidden, args.input,
                              fused_chunk=args.fused_chunk).to(dev)
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
    # what the executor holds beyond a plan's stored states (a core step or a chain's backward,
    # a fused run's transient, the cursor, dh): plan for the rest, so the measured peak stays
    # within the budget
    W = max(rep_loop.working_bytes, rep_fused.working_bytes)
    if budget <= W:
        ap.error(f"the budget ({args.budget}% of plain BPTT's {act} B = {budget} B) is not above "
                 f"the executor's working set ({W} B); use a larger --budget or --seq-len")
    pb = f"{budget - W}B"
    print(f"# plain BPTT peak live bytes {act} ({act / 2**20:.1f} MiB); budget {args.budget}% "
          f"= {budget} B; working set W = {W} B; plans get budget - W = {pb}")

    sizes = dict(hidden_bytes=c_loop.hidden_bytes, internal_bytes=c_loop.internal_bytes,
                 beta_bytes=c_loop.beta_bytes)
    unit = plan("msm", T, pb, costs=CostModel(**sizes))
    plans = {
        "full": (plan("full", T, costs=c_loop), c_loop, False),
        "msm-paper": (unit, c_loop, False),
        "msm-paper-fused": (unit, c_fused, True),
        # a probed cost model carries the working set: the planner bounds the whole peak itself
        # (and plans on fused blocks when the probe measured segments)
        "msm-fused": (plan("msm", T, f"{budget}B", costs=c_fused), c_fused, True),
    }
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m != "plain" and m not in plans]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {['plain', *plans]}")

    def plain_timed():
        t0 = time.perf_counter()
        loss, _ = plain_bptt(model, s0, inputs)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        return t1 - t0, time.perf_counter() - t1

    runners = {"plain": plain_timed}
    predicted = {"plain": T * (c_loop.forward_graph + c_loop.backward)}
    peaks = {"plain": act}
    for name, (p, c, fused) in plans.items():
        def run(p=p, fused=fused):
            loss = bptt(model, s0, inputs, p, fused=fused)
            loss.backward()

        def timed(p=p, fused=fused):
            t0 = time.perf_counter()
            loss = bptt(model, s0, inputs, p, fused=fused)
            sync()
            t1 = time.perf_counter()
            loss.backward()
            sync()
            return t1 - t0, time.perf_counter() - t1

        runners[name] = timed
        sim = simulate_ops(p.ops, T, alpha=p.alpha or 1, beta=p.beta, costs=c)
        predicted[name] = sim.predicted_cost
        if name in methods:
            run()
            model.zero_grad(set_to_none=False)
            with LiveBytesTracker() as mt:
                run()
            peaks[name] = mt.peak_bytes
        print(f"# {name}: {p}; C/T = {p.forward_ops / T:.3f}; predicted peak "
              f"{p.peak_bytes} B; fused runs {'on' if fused else 'off'}")

    fwd = {m: [] for m in methods}
    bwd = {m: [] for m in methods}
    times = {m: [] for m in methods}
    for r in range(args.rounds):
        for m in methods:
            model.zero_grad(set_to_none=False)
            sync()
            a, b = runners[m]()
            fwd[m].append(a)
            bwd[m].append(b)
            times[m].append(a + b)
        print(f"# round {r + 1}: " + ", ".join(f"{m} {times[m][-1]:.3f}s" for m in methods),
              flush=True)

    med = statistics.median
    base = med(times["plain"]) if "plain" in times else None
    print(f"{'method':<16} {'median_s':>8} {'fwd_s':>6} {'bwd_s':>6} {'x_plain':>7} "
          f"{'x_rounds':>8} {'pred_s':>7} {'meas/pred':>9} {'peak_bytes':>10} {'x_mem':>7}")
    for m in methods:
        t = med(times[m])
        ratio = f"{t / base:7.3f}" if base else f"{'-':>7}"
        # median over rounds of (this method / plain in the same round): robust to drift
        per = (f"{med([a / b for a, b in zip(times[m], times['plain'])]):8.3f}" if base
               else f"{'-':>8}")
        mem = peaks.get(m)
        memr = f"{mem / act:7.4f}" if mem is not None else f"{'-':>7}"
        print(f"{m:<16} {t:8.3f} {med(fwd[m]):6.3f} {med(bwd[m]):6.3f} {ratio} {per} "
              f"{predicted[m]:7.3f} {t / predicted[m]:9.3f} {mem if mem is not None else '-':>10} "
              f"{memr}")


if __name__ == "__main__":
    main()
