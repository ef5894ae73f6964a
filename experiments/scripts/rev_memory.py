"""Memory and time of the reversible backward against full-cache BPTT (and MSM) of one cell.

    python experiments/scripts/rev_memory.py [--seq-len 1000] [--batch 16] [--hidden 128]

For RevGRU and RevLSTM language models (untrained, seeded; inputs are bytes of the stdlib
corpus of ``lm_parity.py``) it prints, per cell:

* the buffer after the forward: bits per state unit per step — allocated (64 bits per int64
  held: current chunks and stacked ones), stored (``sum log2(buf + 1)``) and the paper's
  optimum ``sum -log2 z`` — against the 32 bits of a float32 hidden state;
* peak live tensor bytes of one training iteration (forward + backward, parameter gradients
  created inside it; :func:`membptt.measure.memory.tracked_peak`) for the reversible backward,
  full-cache BPTT of the same cell and ``membptt.bptt`` with two MSM plans: ``msm`` plans with
  a byte budget equal to the reversible method's peak (its working set and gradients come on
  top), ``msm-equal-peak`` with that budget minus the first plan's measured excess, so that
  its measured peak is about the reversible one (``--no-msm`` to skip both);
* the median time of one iteration of each, interleaved round-robin in this process
  (:func:`membptt.measure.timing.time_interleaved`).

Nothing is written: the numbers go to stdout (docs/reversible.md quotes a run).
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch
from lm_parity import load_corpus

import membptt
from membptt.measure.memory import tracked_peak
from membptt.measure.timing import time_interleaved
from membptt.models import full_cache_bptt, make_reversible_lm, reversible_bptt
from membptt.models.reversible import ReversibleStats


def measure(cell, args, data):
    torch.manual_seed(args.seed)
    model = make_reversible_lm(cell, args.embed, args.hidden, 256, embed=True)
    T, B = args.seq_len, args.batch
    off = torch.randint(0, data.numel() - T - 1, (B,), generator=torch.Generator().manual_seed(1))
    w = data[off[None, :] + torch.arange(T + 1)[:, None]]
    inputs = (w[:-1].contiguous(), w[1:].contiguous())
    s0 = model.initial_state(B)
    stats = ReversibleStats()

    def zero():
        model.zero_grad(set_to_none=True)

    methods = {
        "reversible": lambda: reversible_bptt(model, s0, inputs, stats=stats).backward(),
        "full-cache": lambda: full_cache_bptt(model, s0, inputs).backward(),
    }
    peaks = {}
    for name, fn in methods.items():
        zero()
        peaks[name] = tracked_peak(fn)[0]
    plans = {}
    if args.msm:
        costs = membptt.probe(model, s0, inputs)
        budget = peaks["reversible"]
        for name in ("msm", "msm-equal-peak"):
            try:
                plans[name] = membptt.plan("msm", T, memory=f"{budget}B", costs=costs)
            except (membptt.PlanError, ValueError) as e:
                print(f"  {name} at {budget} B: infeasible ({e})")
                break
            methods[name] = (lambda p: lambda: membptt.bptt(model, s0, inputs, p).backward())(
                plans[name])
            zero()
            peaks[name] = tracked_peak(methods[name])[0]
            # what the plan does not store (working set, gradients) comes on top of its budget:
            # the second plan's budget leaves room for it, so its peak matches the reversible one
            budget = peaks["reversible"] - (peaks[name] - (plans[name].peak_bytes or 0))
    times = time_interleaved(methods, repeats=args.rounds, warmup=1, before=zero)
    units = B * model.state_units
    print(f"\n## {cell}: T={T}, batch {B}, hidden {args.hidden} ({units // B} fixed-point values "
          f"per element), max_forget {model.cell.max_forget}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"buffer bits per unit per step: allocated {stats.per_unit_step():.3f}, stored "
          f"{stats.per_unit_step('stored'):.3f}, optimal {stats.per_unit_step('optimal'):.3f} "
          f"(float32 state: 32 -> {32 / stats.per_unit_step():.1f}x fewer bits); buffer "
          f"{stats.buffer_bytes} B in {stats.chunks} int64 chunks; float32 states of all T "
          f"steps: {4 * units * T} B")
    print("| method | peak live bytes | / reversible | median time (s) | / reversible |")
    print("|---|---:|---:|---:|---:|")
    for name in methods:
        print(f"| {name} | {peaks[name]} | {peaks[name] / peaks['reversible']:.2f} | "
              f"{times[name].median:.3f} | "
              f"{times[name].median / times['reversible'].median:.2f} |")
    for name, plan in plans.items():
        print(f"{name} plan: budget {plan.peak_bytes} B planned, {plan.forward_ops} forwards "
              f"for {T} steps ({plan.forward_ops / T:.2f} per step), {plan.peak_memory} units")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="gru,lstm")
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-msm", dest="msm", action="store_false")
    args = ap.parse_args(argv)
    for k in ("seq_len", "batch", "embed", "hidden", "rounds", "threads"):
        if getattr(args, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    torch.set_num_threads(args.threads)
    data, sha = load_corpus()
    print(f"torch {torch.__version__}; corpus sha256 {sha[:12]}; "
          f"command: python {shlex.join(sys.argv if argv is None else ['rev_memory.py', *argv])}")
    for cell in args.cells.split(","):
        if cell not in ("gru", "lstm"):
            ap.error(f"--cells: {cell!r} is not one of gru,lstm")
        measure(cell, args, data)


if __name__ == "__main__":
    main()
