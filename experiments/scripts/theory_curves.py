"""Cost per step C(t, m)/t of the exact optimal policies against sequence length (Fig. 2a, 5a, 5b).

One job per strategy: solve the DP table once for every t <= max length and every m up to the
largest budget (``membptt.planning.dp.solve``), then read the curves of every budget from it.
Budgets: HSM in hidden-state slots, ISM in internal-state slots, MSM in internal states k
(memory ``alpha * k`` hidden-state units, as in the paper's Fig. 5b). Standard BPTT (C = t) is
written as strategy ``full`` for the grey reference line.
"""

import time

import pandas as pd
import theory_limits
from measure_lock import hold
from pipeline_common import finish, length_grid, load_published, start, write_csv

from membptt.planning import dp


def main(smk):
    started = start(smk)
    strategy = smk.wildcards.strategy
    p = smk.params
    published = load_published(smk.input.published)
    ratio = float(published["wallclock_model"]["backward_over_forward"])
    alpha = int(p.alpha)
    if strategy == "hsm":
        family, unit, kind, max_len = dp.hsm_family(), 1, "hidden-state slots", p.lengths["max"]
    elif strategy == "ism":
        family, unit, kind, max_len = dp.ism_family(), 1, "internal-state slots", p.lengths["max"]
    else:
        family, unit, kind = dp.msm_family(alpha), alpha, "internal states (alpha*k units)"
        max_len = min(p.lengths["max"], p.msm_max_len)
    lengths = length_grid(p.lengths["min"], max_len, p.lengths["points"],
                          extra=published["cost_per_step"]["lengths"])
    budgets = [int(b) for b in p.budgets]
    M = max(unit * b for b in budgets)
    t0 = time.time()
    tab = theory_limits.solve(smk, max_len, M, family, f"the {strategy} curves")
    print(f"dp.solve({max_len}, {M}, {family.name}) in {time.time() - t0:.1f} s", flush=True)
    rows = []
    for b in budgets:
        m = unit * b
        for t in lengths:
            c = tab.cost(t, m)
            rows.append({"strategy": strategy, "alpha": alpha if strategy == "msm" else None,
                         "budget": b, "budget_kind": kind, "memory_units": m, "seq_len": t,
                         "forward_ops": c, "cost_per_step": c / t,
                         "time_ratio": (c + ratio * t) / ((1 + ratio) * t)})
    for t in lengths:  # standard BPTT: one forward per step (definition of the baseline)
        rows.append({"strategy": "full", "alpha": None, "budget": None,
                     "budget_kind": "stores every internal state", "memory_units": None,
                     "seq_len": t, "forward_ops": t, "cost_per_step": 1.0, "time_ratio": 1.0})
    df = pd.DataFrame(rows)
    df["alpha"] = df["alpha"].astype("Int64")
    df["budget"] = df["budget"].astype("Int64")
    df["memory_units"] = df["memory_units"].astype("Int64")
    df["forward_ops"] = df["forward_ops"].astype("int64")
    write_csv(df, smk.output.csv)
    finish(smk, started, __file__, [smk.output.csv])


if __name__ == "__main__":
    with hold("shared", "theory_curves"):  # never beside a measuring group (measure_lock.py)
        main(snakemake)  # noqa: F821
