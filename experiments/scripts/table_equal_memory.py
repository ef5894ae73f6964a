"""Table: every method at (or below) the reference checkpoint's measured peak, at one length.

All rows come from one comparison group (tradeoff_T<T>): times are per-round ratios inside it,
to the group's baseline and to the reference (the config's ``equal_memory_reference``, e.g.
torch.utils.checkpoint over fused segments). For each method the point with the lowest median
ratio among those whose peak is <= the reference's; a method with no such point shows its
smallest-peak point, marked "above".
"""

import groups
import pandas as pd
from pipeline_common import fmt, start, write_tables

COLUMNS = ["method", "point", "peak (MiB)", "peak / ref", "time / baseline",
           "time / ref", "forward ops", "grad error", "vs ref memory"]


def _ratio(x: dict) -> str:
    return f"{x['median']:.2f} [{x['q1']:.2f}–{x['q3']:.2f}]"


def main(smk):
    start(smk)
    df = groups.load(smk.input.csv)
    group = f"tradeoff_T{int(smk.params.seq_len)}"
    d = df[(df.group == group) & (df.status == "ok") & df.peak_bytes.notna()
           & df.ratio_median.notna()]
    ref_label = smk.params.reference
    ref = d[d.label == ref_label]
    rows = []
    if len(ref):
        r = ref.iloc[0]
        for method, g in d.groupby("method", sort=False):
            fit = g[g.peak_bytes <= r.peak_bytes]
            p = (fit.sort_values("ratio_median").iloc[0] if len(fit)
                 else g.sort_values("peak_bytes").iloc[0])
            rows.append({"method": method, "point": p.label,
                         "peak (MiB)": fmt(p.peak_bytes / 2**20, 2),
                         "peak / ref": fmt(p.peak_bytes / r.peak_bytes, 2),
                         "time / baseline": f"{p.ratio_median:.2f} [{p.ratio_q1:.2f}–"
                                            f"{p.ratio_q3:.2f}]",
                         "time / ref": _ratio(groups.ratio_between(p, r)),
                         "forward ops": fmt(p.forward_ops, 0),
                         "grad error": f"{p.grad_error:.1e}" if pd.notna(p.grad_error) else "—",
                         "vs ref memory": "≤" if p.peak_bytes <= r.peak_bytes else "above",
                         "_t": p.ratio_median})
    out = pd.DataFrame(rows, columns=[*COLUMNS, "_t"])
    out = out.sort_values(["vs ref memory", "_t"]).drop(columns="_t")
    base = d.group_baseline.iloc[0] if len(d) else "?"
    write_tables(out, smk.output.md, smk.output.tex,
                 f"Methods at the measured peak memory of {ref_label}, T = "
                 f"{int(smk.params.seq_len)}, one comparison group ({group}): the fastest "
                 f"point of each method whose peak is at most the reference's; times are "
                 f"per-round ratios (median [Q1–Q3]) to {base} and to the reference",
                 "tab:equal-memory")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
