"""How far block plans are from the step-level optimum on unit costs (issue 9, planning half).

    .venv/bin/python benchmarks/bench_blocks.py [--lengths 100 1000] [--ks 1 2 4 8 16 32]

Unit costs: a graph-free run 1 per step, a forward with graph 1 per step, a backward 2 per
step; a block of k steps costs k times those (``membptt.plan(..., block=k)`` without
segments). Budgets are percentages of the full-cache memory, ``alpha * T`` units (alpha = 5,
no beta form), the paper's accounting. A block plan reserves its core block's first k - 1
steps out of the budget (they are stored at step level), so every expanded block plan is a
valid step-level plan within the same units and its forward count F_k is never below the step
optimum C(t, m) (tests/test_blocks.py checks this as a property). Printed: F_k / C(t, m) - 1
in percent ("-" where the budget is below the block plan's minimum), for MSM and ISM.
"""

import argparse
import time

import membptt
from membptt.planning import BudgetTooSmall, dp


def step_optimum(strategy: str, t: int, m: int, alpha: int) -> float:
    if strategy == "ism":
        return dp.cost(t, m // alpha, dp.ism_family())
    return dp.cost(t, m, dp.msm_family(alpha))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--percents", type=float, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--alpha", type=int, default=5)
    a = ap.parse_args()
    t0 = time.perf_counter()
    for strategy in ("msm", "ism"):
        print(f"\n{strategy.upper()}, alpha = {a.alpha}, unit costs: forward count of the block "
              "plan over the step optimum, F_k / C(t, m) - 1 (%)\n")
        print("| t | budget | m (units) | C(t, m) | " + " | ".join(f"k={k}" for k in a.ks) + " |")
        print("|---|---|---|---|" + "---|" * len(a.ks))
        for t in a.lengths:
            for pct in a.percents:
                memory = f"{pct:g}%"
                cells = []
                m = None
                for k in a.ks:
                    try:
                        p = membptt.plan(strategy, t, memory, alpha=a.alpha, block=k)
                    except BudgetTooSmall:
                        cells.append("-")
                        continue
                    m = int(pct / 100 * a.alpha * t + 1e-9)
                    c = step_optimum(strategy, t, m, a.alpha)
                    assert p.forward_ops >= c, (strategy, t, memory, k)
                    cells.append(f"{100 * (p.forward_ops / c - 1):.1f}")
                m = int(pct / 100 * a.alpha * t + 1e-9)
                c = step_optimum(strategy, t, m, a.alpha)
                print(f"| {t} | {memory} | {m} | {c:.0f} | " + " | ".join(cells) + " |")
    print(f"\n({time.perf_counter() - t0:.1f} s, dp backend {dp.backend()})")


if __name__ == "__main__":
    main()
