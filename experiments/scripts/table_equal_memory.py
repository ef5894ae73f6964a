"""Table: every method at (or below) torch-checkpoint's measured peak memory, at one length.

For each method, the fastest measured point whose peak is <= torch-checkpoint's; a method with
no such point shows its smallest-peak point, marked "above".
"""

import pandas as pd
from pipeline_common import fmt, start, write_tables


def main(smk):
    start(smk)
    df = pd.read_csv(smk.input.csv, dtype={"budget_requested": str})
    T = int(smk.params.seq_len)
    d = df[(df.seq_len == T) & (df.status == "ok") & df.peak_bytes.notna()]
    ref = d[d.method == "torch-checkpoint"]
    rows = []
    if len(ref):
        r = ref.iloc[0]
        for method, g in d.groupby("method", sort=False):
            fit = g[g.peak_bytes <= r.peak_bytes]
            p = (fit.sort_values("time_median_s").iloc[0] if len(fit)
                 else g.sort_values("peak_bytes").iloc[0])
            rows.append({"method": method,
                         "budget": p.budget_requested if pd.notna(p.budget_requested) else "—",
                         "peak (MiB)": fmt(p.peak_bytes / 2**20, 2),
                         "peak / ckpt": fmt(p.peak_bytes / r.peak_bytes, 2),
                         "time (s)": fmt(p.time_median_s, 3),
                         "time / ckpt": fmt(p.time_median_s / r.time_median_s, 2),
                         "forward ops": fmt(p.forward_ops, 0),
                         "grad error": f"{p.grad_error:.1e}" if pd.notna(p.grad_error) else "—",
                         "vs ckpt memory": "≤" if p.peak_bytes <= r.peak_bytes else "above"})
    df_out = pd.DataFrame(rows, columns=["method", "budget", "peak (MiB)", "peak / ckpt",
                                         "time (s)", "time / ckpt", "forward ops",
                                         "grad error", "vs ckpt memory"])
    if len(df_out):
        df_out["_t"] = pd.to_numeric(df_out["time (s)"], errors="coerce")
        df_out = df_out.sort_values(["vs ckpt memory", "_t"]).drop(columns="_t")
    write_tables(df_out, smk.output.md, smk.output.tex,
                 f"Methods at torch-checkpoint's measured peak memory, T = {T}: the fastest "
                 "point of each method whose measured peak is at most torch-checkpoint's",
                 "tab:equal-memory")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
