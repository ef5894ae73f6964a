"""Long fused segments: torch.utils.checkpoint against the executor at the K = 8 front point.

Issue 9's K = 8 point (``torch.utils.checkpoint`` over 8 fused segments of 125 steps, 164 MiB)
is where chain planning was slower than the checkpoint in ``bench_peers.py`` groups. This
script times, in one process, interleaved round by round (medians over rounds after the
first): the checkpoint over 8 and 32 fused segments (reentrant), membptt's HSM block plans
with blocks of 125 and 32 steps at the K = 8 peak (the checkpoint's structure run by the
executor: checkpoints at block bounds, one fused call with graph per block), and the chain
plan at the same budget. Workload: T = 1000, LSTM 256, dense inputs 256, 256 classes, batch 64,
float32, CPU::

    .venv/bin/python benchmarks/bench_long_segments.py --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import membptt
from membptt.execution import measure_step
from membptt.measure.methods import make_method
from membptt.measure.workload import WorkloadConfig, make_workload

K8_PEAK = "172426252B"  # the K = 8 checkpoint's measured peak in bench_peers groups (164.4 MiB)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", default=K8_PEAK)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    w = make_workload(WorkloadConfig(seq_len=1000))
    costs = measure_step(w.step_fn, w.state0, w.inputs).costs
    runs = {}
    for K in (8, 32):
        m = make_method(f"torch-checkpoint-fused-reentrant:segments={K}", w)
        m.prepare()
        runs[f"checkpoint K={K}"] = m.run
    plans = {f"hsm block={k}": membptt.plan("hsm", 1000, args.budget, costs=costs, block=k)
             for k in (125, 32)}
    plans["hsm chains"] = membptt.plan("hsm", 1000, args.budget, costs=costs, planner="chains")
    for name, p in plans.items():
        runs[name] = (lambda p=p: membptt.bptt(w.step_fn, w.state0, w.inputs, p).backward())
        print(f"# {name}: predicted {p.predicted_cost:.3f} s, predicted peak "
              f"{p.predicted_peak_bytes / 2**20:.1f} MiB")
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            w.zero_grad()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["checkpoint K=8"][1:])
    print(f"{'method':20s} {'median s':>9s} {'x ckpt K=8':>10s}  per round (s)")
    for name, v in times.items():
        med = statistics.median(v[1:])
        print(f"{name:20s} {med:9.3f} {med / base:10.3f}  {[round(x, 3) for x in v]}")


if __name__ == "__main__":
    main()
