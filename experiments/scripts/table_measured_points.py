"""Table: every method of the trade-off group (time, ratio to the baseline, peak, predicted
peak, error); one comparison group, so the ratios are per round."""

import groups
import pandas as pd
from pipeline_common import fmt, start, write_tables


def main(smk):
    start(smk)
    df = groups.load(smk.input.csv)
    group = f"tradeoff_T{int(smk.params.seq_len)}"
    d = df[df.group == group].sort_values(["method", "peak_bytes"])
    rows = [{"method": r.label,
             "units": fmt(r.budget_units, 0),
             "fwd ops": fmt(r.forward_ops, 0),
             "time (s)": fmt(r.time_median_s, 3),
             "time / baseline": (f"{r.ratio_median:.2f} [{r.ratio_q1:.2f}–{r.ratio_q3:.2f}]"
                                 if pd.notna(r.ratio_median) else "—"),
             "peak (MiB)": fmt(r.peak_bytes / 2**20, 2),
             "predicted (MiB)": fmt(r.predicted_peak_bytes / 2**20, 2),
             "RSS (MiB)": fmt((r.rss_peak_bytes - r.rss_baseline_bytes) / 2**20, 1),
             "grad error": f"{r.grad_error:.1e}" if pd.notna(r.grad_error) else "—",
             "status": r.status}
            for r in d.itertuples()]
    base = d.group_baseline.iloc[0] if len(d) else "?"
    write_tables(pd.DataFrame(rows), smk.output.md, smk.output.tex,
                 f"Every method of comparison group {group} (time ratios per round to {base}, "
                 "median [Q1–Q3])", "tab:measured-points")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
