"""BPTT-MSM against Chen et al.'s sqrt(t) algorithm (the paper's Fig. 7).

Chen's algorithm keeps sqrt(t) boundary hidden states and one segment of internal states:
memory sqrt(t)(1 + beta) hidden-state units for about one extra forward pass (2t - sqrt(t)
forward operations). For each beta, MSM runs with alpha = beta + 1 and the beta form (BPTT-MSM
in arXiv:1606.03401), so its accounting matches Chen's. Two comparisons, both exact (DP tables):

* memory: the least MSM budget m with C(t, m) <= cost_per_step * t, divided by Chen's memory;
* cost: MSM's C(t, m)/t at Chen's memory m = floor(sqrt(t)(1 + beta)), beside Chen's.

The planner's own Chen plan at that budget is compiled and simulated too (``membptt.plan``).
"""

import math

import numpy as np
import pandas as pd
import theory_limits
from measure_lock import hold
from pipeline_common import finish, length_grid, start, write_csv

import membptt
from membptt.planning import dp


def main(smk):
    started = start(smk)
    p = smk.params
    g = p.lengths
    lengths = length_grid(g["min"], g["max"], g["points"])
    target = float(p.cost_per_step)
    rows = []
    for beta in (int(b) for b in p.betas):
        alpha = beta + 1
        T = max(lengths)
        M = math.ceil(2 * math.sqrt(T) * (1 + beta)) + alpha
        tab = theory_limits.solve(smk, T, M, dp.msm_family(alpha, beta),
                                  f"theory.fig7 (beta={beta})")
        print(f"beta={beta}: dp.solve({T}, {M}) done", flush=True)
        for t in lengths:
            chen_mem = math.sqrt(t) * (1 + beta)
            col = np.asarray(tab.C[t, 1:], dtype=float)  # m = 1..M
            ok = np.flatnonzero(col <= target * t + 1e-9)
            m_at_cost = int(ok[0] + 1) if len(ok) else None
            m_chen = int(math.floor(chen_mem))
            c_chen_mem = tab.cost(t, m_chen)
            try:
                plan = membptt.plan("chen", t, math.ceil(chen_mem), alpha=alpha, beta=beta)
                chen_fwd, chen_peak = plan.forward_ops, plan.peak_memory
            except ValueError as exc:
                print(f"chen plan t={t}: {exc}", flush=True)
                chen_fwd = chen_peak = None
            rows.append({
                "beta": beta, "alpha": alpha, "seq_len": t,
                "chen_memory": chen_mem, "chen_cost_per_step": (2 * t - math.sqrt(t)) / t,
                "chen_plan_forward_ops": chen_fwd, "chen_plan_peak_memory": chen_peak,
                "target_cost_per_step": target,
                "msm_memory_at_target": m_at_cost,
                "memory_ratio": m_at_cost / chen_mem if m_at_cost else None,
                "msm_cost_per_step_at_chen_memory": c_chen_mem / t,
                "chen_memory_floor": m_chen,
            })
    df = pd.DataFrame(rows)
    for col in ("chen_plan_forward_ops", "chen_plan_peak_memory", "msm_memory_at_target"):
        df[col] = df[col].astype("Int64")
    write_csv(df, smk.output.csv)
    finish(smk, started, __file__, [smk.output.csv])


if __name__ == "__main__":
    with hold("shared", "theory_fig7"):  # never beside a measuring group (measure_lock.py)
        main(snakemake)  # noqa: F821
