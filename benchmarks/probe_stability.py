"""Do two probes of one model give the same plans? (issue 18, stable plans)

Probes one workload ``--probes`` times in this process (the probe's own rules: medians over
its ``repeats`` rounds taken round-robin, call times made non-decreasing in length, sizes
counted in live bytes), plans MSM through the front door at each ``--budgets`` on every cost
model, and prints, per budget, the plan each probe gave (planner, block or chain count,
forward steps), its predicted time, and the spread of those predicted times (largest over
smallest, minus one). A plan chosen on one probe is also priced on the others' costs (``cross``:
the largest ratio of that price to the other probe's own choice), which says whether a
different choice is a real difference or a tie within noise.

::

    .venv/bin/python benchmarks/probe_stability.py                       # launch-bound sizes
    .venv/bin/python benchmarks/probe_stability.py --hidden 256 --input-size 256 \\
        --classes 256 --batch 64 --threads 2                                # the paper's sizes

Budgets: percentages of plain stepped BPTT's measured peak. Nothing is asserted; on a busy
machine the probes' times move with the load, which is what this shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import membptt
from membptt.measure.workload import WorkloadConfig, make_workload


def describe(p) -> str:
    shape = (f"blocks of {p.block}" if p.planner == "blocks" else
             f"{p.info['chains']} chains" if p.planner == "chains" else "steps")
    return f"{p.planner:6s} {shape:16s} {p.forward_ops:5d} fwd"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--input-size", type=int, default=16)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--probes", type=int, default=3)
    ap.add_argument("--budgets", default="3%,5%,10%,20%,40%")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    w = make_workload(WorkloadConfig(seq_len=args.seq_len, hidden=args.hidden,
                                     batch=args.batch, input_size=args.input_size,
                                     classes=args.classes))
    costs, secs = [], []
    for _ in range(args.probes):
        t0 = time.perf_counter()
        costs.append(membptt.probe(w.step_fn, w.state0, w.inputs))
        secs.append(time.perf_counter() - t0)
    print(f"[stability] T={args.seq_len}, LSTM {args.hidden}, batch {args.batch}, "
          f"{args.threads} thread(s): {args.probes} probes of "
          + ", ".join(f"{s:.1f}" for s in secs) + " s")
    # determinism: the same cost model gives the same plan
    same = all(membptt.plan("msm", args.seq_len, b, costs=c).ops
               == membptt.plan("msm", args.seq_len, b, costs=c).ops
               for c in costs[:1] for b in args.budgets.split(","))
    print(f"same cost model, same plan: {same}\n")
    worst = 0.0
    for b in args.budgets.split(","):
        plans = []
        for c in costs:
            try:
                plans.append(membptt.plan("msm", args.seq_len, b, costs=c))
            except (membptt.BudgetTooSmall, membptt.PlanTooLarge) as e:
                plans.append(e)
        ok = [p for p in plans if not isinstance(p, Exception)]
        print(f"memory={b}")
        for i, p in enumerate(plans):
            if isinstance(p, Exception):
                print(f"  probe {i + 1}: {type(p).__name__}: {str(p)[:120]}")
                continue
            print(f"  probe {i + 1}: {describe(p)}  predicted {p.predicted_cost * 1e3:9.3f} ms "
                  f"peak {p.predicted_peak_bytes:,} B of {p.budget.bytes:,}")
        if len(ok) < 2:
            continue
        t = [p.predicted_cost for p in ok]
        spread = max(t) / min(t) - 1
        cross = max(q.predict(costs[j]).total_cost / ok[j].predicted_cost
                    for q in ok for j in range(len(ok)))
        worst = max(worst, spread)
        print(f"  spread of predicted times {100 * spread:.1f} %; a probe's plan on another's "
              f"costs at most {100 * (cross - 1):+.1f} % over that probe's own choice; median "
              f"{statistics.median(t) * 1e3:.3f} ms\n")
    print(f"largest spread: {100 * worst:.1f} % (target: within 5 % on a quiet machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
