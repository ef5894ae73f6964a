"""HSM vs ISM vs MSM at equal memory (the paper's Fig. 6) and the lengths where HSM overtakes ISM.

Budgets are given in internal states k: ISM gets k internal-state slots, HSM and MSM get
``alpha * k`` hidden-state units. Every length 1..max_len is computed (exact DP tables), so the
crossover is exact: the first t at which HSM is strictly cheaper than ISM and stays so for every
longer t computed.
"""

import numpy as np
import pandas as pd
import theory_limits
from measure_lock import hold
from pipeline_common import finish, start, write_csv

from membptt.planning import dp


def main(smk):
    started = start(smk)
    alpha = int(smk.params.alpha)
    ks = [int(k) for k in smk.params.budgets_internal]
    T = int(smk.params.max_len)
    hsm = theory_limits.solve(smk, T, alpha * max(ks), dp.hsm_family(), "theory.fig6")
    ism = theory_limits.solve(smk, T, max(ks), dp.ism_family(), "theory.fig6")
    msm = theory_limits.solve(smk, T, alpha * max(ks), dp.msm_family(alpha), "theory.fig6")
    t = np.arange(1, T + 1)
    curves, cross = [], []
    for k in ks:
        c = {"hsm": np.array([hsm.cost(x, alpha * k) for x in t]),
             "ism": np.array([ism.cost(x, k) for x in t]),
             "msm": np.array([msm.cost(x, alpha * k) for x in t])}
        for name, vals in c.items():
            curves.append(pd.DataFrame({
                "strategy": name, "alpha": alpha, "budget_internal": k,
                "memory_units": alpha * k, "slots": k if name == "ism" else alpha * k,
                "seq_len": t, "forward_ops": vals.astype("int64"), "cost_per_step": vals / t}))
        better = c["hsm"] < c["ism"]
        first_strict = int(t[better][0]) if better.any() else None
        # first t from which HSM stays strictly cheaper up to max_len
        tail = np.flatnonzero(~better)
        stays = int(t[tail[-1]] + 1) if len(tail) and tail[-1] + 1 < T else None
        if not len(tail):
            stays = 1
        msm_best = bool(np.all(c["msm"] <= np.minimum(c["hsm"], c["ism"])))
        cross.append({"alpha": alpha, "budget_internal": k, "memory_units": alpha * k,
                      "max_len": T, "hsm_first_cheaper_at": first_strict,
                      "hsm_cheaper_from": stays, "msm_never_worse": msm_best,
                      "hsm_cost_at_crossover": int(c["hsm"][first_strict - 1])
                      if first_strict else None,
                      "ism_cost_at_crossover": int(c["ism"][first_strict - 1])
                      if first_strict else None})
    write_csv(pd.concat(curves, ignore_index=True), smk.output.curves)
    crossdf = pd.DataFrame(cross)
    for col in ("hsm_first_cheaper_at", "hsm_cheaper_from", "hsm_cost_at_crossover",
                "ism_cost_at_crossover"):
        crossdf[col] = crossdf[col].astype("Int64")
    write_csv(crossdf, smk.output.crossovers)
    finish(smk, started, __file__, [smk.output.curves, smk.output.crossovers])


if __name__ == "__main__":
    with hold("shared", "theory_fig6"):  # never beside a measuring group (measure_lock.py)
        main(snakemake)  # noqa: F821
