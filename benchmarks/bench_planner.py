"""Planner speed (issue 2 targets). Prints medians over repeats, cache cleared before each.

    .venv/bin/python benchmarks/bench_planner.py [--repeats 3]

Targets on the 2-core CPU: one MSM plan for t = 1000 at any budget < 1 s; the MSM table for
t <= 1000, m <= 5000 (alpha = 5) < 30 s; one MSM plan for t = 10,000 at m = 500 < 10 s.
"""

import argparse
import statistics
import time

import membptt
from membptt.planning import CostModel, dp


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        dp.clear_cache()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), min(out), max(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"dp backend: {dp.backend()}")
    measured = CostModel(run_fixed=0.31, run_per_step=0.43, forward_graph=1.1, backward=1.4)
    rows = []
    for m in (10, 50, 250, 1000, 2500, 5000):
        rows.append((f"msm plan t=1000 m={m} alpha=5 (unit costs)",
                     lambda m=m: membptt.plan("msm", 1000, m, alpha=5), 1.0))
    rows.append(("msm plan t=1000 m=5000 alpha=5 beta=4 (non-integer costs)",
                 lambda: membptt.plan("msm", 1000, 5000, alpha=5, beta=4, costs=measured), 1.0))
    rows.append(("msm table t<=1000 m<=5000 alpha=5",
                 lambda: dp.solve(1000, 5000, dp.msm_family(5)), 30.0))
    rows.append(("msm plan t=10000 m=500 alpha=5",
                 lambda: membptt.plan("msm", 10000, 500, alpha=5), 10.0))
    rows.append(("msm plan t=10000 m=500 alpha=5 beta=4 (non-integer costs)",
                 lambda: membptt.plan("msm", 10000, 500, alpha=5, beta=4, costs=measured), 10.0))
    for name, fn, target in rows:
        med, lo, hi = timed(fn, a.repeats)
        ok = "ok" if med < target else "OVER TARGET"
        print(f"{name:62s} median {med:7.3f} s  (min {lo:.3f}, max {hi:.3f}; "
              f"target < {target:g} s: {ok})", flush=True)


if __name__ == "__main__":
    main()
