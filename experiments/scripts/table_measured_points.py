"""Table: every measured point at the trade-off length (time, peak, predicted peak, error)."""

import pandas as pd
from pipeline_common import fmt, start, write_tables


def main(smk):
    start(smk)
    df = pd.read_csv(smk.input.csv, dtype={"budget_requested": str})
    T = int(smk.params.seq_len)
    d = df[df.seq_len == T].sort_values(["method", "peak_bytes"])
    rows = [{"method": r.method,
             "budget": r.budget_requested if pd.notna(r.budget_requested) else "—",
             "units": fmt(r.budget_units, 0),
             "fwd ops": fmt(r.forward_ops, 0),
             "time (s)": fmt(r.time_median_s, 3),
             "IQR (s)": fmt(r.time_iqr_s, 3),
             "peak (MiB)": fmt(r.peak_bytes / 2**20, 2),
             "predicted (MiB)": fmt(r.predicted_peak_bytes / 2**20, 2),
             "RSS (MiB)": fmt((r.rss_peak_bytes - r.rss_baseline_bytes) / 2**20, 1),
             "grad error": f"{r.grad_error:.1e}" if pd.notna(r.grad_error) else "—",
             "status": r.status}
            for r in d.itertuples()]
    write_tables(pd.DataFrame(rows), smk.output.md, smk.output.tex,
                 f"Every measured point at T = {T}", "tab:measured-points")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
