"""A lone core's bytes measured at every chain length against at the timed lengths only (A/B).

The chain planner's only byte price is a lone core's working set by length
(``SegmentCosts.core_bytes``), priced between measured lengths at the next measured length up.
The probe used to measure it at the timed lengths only (powers of two and ``ceil(T / K)``), so
a 17-step chain was charged a 32-step core's bytes. It now measures it on
``probe.core_lengths`` (every length up to 32 and lengths at most 10 % apart up to 128).

This script probes once and plans ``msm`` at each budget twice: on the probed costs
("dense") and on the same costs with the core's bytes kept only at the timed lengths, each
the next dense value up, as the old probe measured them ("timed"). Both plans run in one
process, interleaved round by round; it prints each plan's shape, predicted time and peak,
measured peak (live tensor bytes) and the median of per-round time ratios dense / timed.

    .venv/bin/python benchmarks/bench_core_lengths.py                          # paper sizes
    .venv/bin/python benchmarks/bench_core_lengths.py --hidden 16 --input-size 16 \\
        --classes 16 --batch 2 --threads 1 --memory 5%,338892B,126540B,42790B --rounds 9
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

import membptt
from membptt.execution.memtrack import LiveBytesTracker
from membptt.measure.results import atomic_write_text
from membptt.measure.workload import WorkloadConfig, make_workload


def timed_only(costs):
    """``costs`` with the lone core's bytes at the timed lengths only (what the probe measured
    before ``core_lengths``): at each timed length, the dense grid's value there."""
    seg = costs.segments
    core = tuple(int(seg.at("core_bytes", L)) for L in seg.lengths)
    return costs.with_(segments=dataclasses.replace(seg, core_bytes=core, core_lengths=None))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory", default="5%,34513932B,16339462B",
                    help="comma-separated budgets as membptt.plan takes them (default: 5 %%, "
                         "the K = 64 checkpoint's peak and half the K = 128 one at paper sizes)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="write the printed table here too")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    torch.set_num_threads(args.threads)
    w = make_workload(WorkloadConfig(seq_len=args.seq_len, model="lstm", hidden=args.hidden,
                                     batch=args.batch, input_size=args.input_size,
                                     classes=args.classes))
    t0 = time.perf_counter()
    costs = membptt.probe(w.step_fn, w.state0, w.inputs)
    probe_s = time.perf_counter() - t0
    if costs.segments is None or costs.segments.core_lengths is None:
        raise SystemExit("the probe measured no fused segments; nothing to compare")
    variants = {"dense": costs, "timed": timed_only(costs)}
    budgets = [m.strip() for m in args.memory.split(",") if m.strip()]
    plans = {}
    for b in budgets:
        for tag, c in variants.items():
            plans[(b, tag)] = membptt.plan("msm", args.seq_len, memory=b, costs=c)
    model = w.step_fn

    def run(p):
        model.zero_grad(set_to_none=True)
        membptt.bptt(model, w.state0, w.inputs, p).backward()

    peaks = {}
    for k, p in plans.items():
        run(p)  # warm
        model.zero_grad(set_to_none=True)
        with LiveBytesTracker() as tr:
            membptt.bptt(model, w.state0, w.inputs, p).backward()
        peaks[k] = tr.peak_bytes
    samples = {k: [] for k in plans}
    for r in range(args.rounds):
        for k in (list(plans) if r % 2 == 0 else list(plans)[::-1]):
            t = time.perf_counter()
            run(plans[k])
            samples[k].append(time.perf_counter() - t)
    lines = [f"T = {args.seq_len}, LSTM {args.hidden}, input {args.input_size}, "
             f"{args.classes} classes, batch {args.batch}, {args.threads} thread(s), "
             f"torch {torch.__version__}; probe {probe_s:.1f} s, core lengths "
             f"{len(costs.segments.core_lengths)} (timed lengths {len(costs.segments.lengths)}); "
             f"{args.rounds} rounds",
             f"{'budget':>12} {'core bytes':>10} {'plan':>34} {'pred s':>8} {'pred MiB':>9} "
             f"{'peak MiB':>9} {'budget MiB':>10} {'median s':>9}"]
    for b in budgets:
        for tag in variants:
            p = plans[(b, tag)]
            lines.append(f"{b:>12} {tag:>10} {p.planner + ': ' + p.shape:>34} "
                         f"{p.predicted_cost:8.4f} {p.predicted_peak_bytes / 2**20:9.3f} "
                         f"{peaks[(b, tag)] / 2**20:9.3f} {p.budget.bytes / 2**20:10.3f} "
                         f"{statistics.median(samples[(b, tag)]):9.4f}")
        d, s = samples[(b, "dense")], samples[(b, "timed")]
        lines.append(f"{b:>12} dense / timed per round: "
                     f"{statistics.median(x / y for x, y in zip(d, s)):.3f}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out is not None:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
