"""Every single number of the paper's text and test tables, recomputed with the exact DP.

Which quantities to compute is read from ``paper/published.json`` (its keys); the values are
computed here, and the published value is written beside each for the tables and the report.
"""

import pandas as pd
from measure_lock import hold
from pipeline_common import finish, load_published, start, write_csv

from membptt.planning import dp


def main(smk):
    started = start(smk)
    pub = load_published(smk.input.published)
    ratio = float(pub["wallclock_model"]["backward_over_forward"])
    rows = []

    def add(group, strategy, t, m, ours, published, alpha=None, beta=None, unit="forward_ops"):
        rows.append({"group": group, "strategy": strategy, "alpha": alpha, "beta": beta,
                     "seq_len": t, "memory": m, "quantity": unit, "ours": ours,
                     "published": published})

    st = pub["small_tables"]
    for key, fam, alpha, beta in (("hsm", dp.hsm_family(), None, None),
                                  ("ism", dp.ism_family(), None, None),
                                  ("msm_alpha2", dp.msm_family(2), 2, None),
                                  ("msm_alpha3_beta2", dp.msm_family(3, 2), 3, 2)):
        spec = st[key]
        ts = spec.get("t", list(range(1, len(spec["rows"]) + 1)))
        for t, row in zip(ts, spec["rows"]):
            for m, val in zip(spec["m"], row):
                add(f"small_{key}", fam.name, t, m, dp.cost(t, m, fam), val, alpha, beta)
    lv = pub["large_values"]
    for m, val in zip(lv["hsm_t1000"]["m"], lv["hsm_t1000"]["C"]):
        add("large_hsm_t1000", "hsm", 1000, m, dp.c_hsm(1000, m), val)
    add("large_ism", "ism", 1000, 50, dp.c_ism(1000, 50), lv["ism_t1000_m50"])
    for m, val in zip(lv["msm_alpha5_t1000"]["m"], lv["msm_alpha5_t1000"]["C"]):
        add("large_msm_alpha5_t1000", "msm", 1000, m, dp.c_msm(1000, m, 5), val, 5)
    # headline: ISM with 5 % of standard BPTT's memory at t = 1000
    h = pub["headline"]
    t, m = int(h["seq_len"]), int(h["ism_slots"])
    c = dp.c_ism(t, m)
    add("headline", "ism", t, m, c, h["forward_ops"])
    add("headline", "ism", t, m, 1 - m / t, h["memory_saved_fraction"], unit="memory_saved")
    add("headline", "ism", t, m, (c + ratio * t) / ((1 + ratio) * t), h["time_ratio"],
        unit="time_ratio")
    f3 = pub["fig3"]
    add("fig3", "hsm", 4, f3["m"], dp.c_hsm(4, f3["m"]), f3["t4_cost"])
    add("fig3", "hsm", 10, f3["m"], dp.c_hsm(10, f3["m"]), f3["t10_cost"])
    df = pd.DataFrame(rows)
    for col in ("alpha", "beta"):
        df[col] = df[col].astype("Int64")
    df["abs_diff"] = (df["ours"] - df["published"]).abs()
    # integers must match exactly; ratios to the paper's 3 decimals
    tol = df["quantity"].map({"forward_ops": 0.0}).fillna(5e-4)
    df["match"] = df["abs_diff"] <= tol + 1e-9
    write_csv(df, smk.output.csv)
    finish(smk, started, __file__, [smk.output.csv])


if __name__ == "__main__":
    with hold("shared", "theory_paper_values"):  # never beside a measuring group (measure_lock.py)
        main(snakemake)  # noqa: F821
