"""Predicted against measured, for the plan strategies: peak bytes (the planner's stored
states; the measured peak adds the plan-independent working set) and time (the plan priced by
the probed cost model)."""

import pandas as pd
from pipeline_common import plotting, save_figure, start


def main(smk):
    start(smk)
    plt, sns = plotting()
    df = pd.read_csv(smk.input.csv, dtype={"budget_requested": str})
    d = df[(df.status == "ok") & df.predicted_peak_bytes.notna()].copy()
    d["predicted_MiB"] = d.predicted_peak_bytes / 2**20
    d["measured_MiB"] = d.peak_bytes / 2**20
    d["T"] = d.seq_len.astype(str)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    if len(d):
        sns.scatterplot(data=d, x="predicted_MiB", y="measured_MiB", hue="method", style="T",
                        ax=ax1, s=45)
        lo = max(min(d.predicted_MiB.min(), d.measured_MiB.min()) * 0.8, 1e-3)
        hi = max(d.predicted_MiB.max(), d.measured_MiB.max()) * 1.2
        ax1.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--", label="y = x")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        t = d[d.predicted_time_s.notna() & d.time_median_s.notna()]
        sns.scatterplot(data=t, x="predicted_time_s", y="time_median_s", hue="method",
                        style="T", ax=ax2, s=45, legend=False)
        if len(t):
            lo = min(t.predicted_time_s.min(), t.time_median_s.min()) * 0.8
            hi = max(t.predicted_time_s.max(), t.time_median_s.max()) * 1.2
            ax2.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--")
            ax2.set_xscale("log")
            ax2.set_yscale("log")
    ax1.set_xlabel("predicted peak of stored states (MiB)")
    ax1.set_ylabel("measured peak (MiB, incl. working set)")
    ax1.set_title("memory")
    ax1.legend(fontsize=7, ncol=2)
    ax2.set_xlabel("predicted time (s, probed cost model)")
    ax2.set_ylabel("measured median time (s)")
    ax2.set_title("time")
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
