"""Memory-time trade-off at one length for every method: measured peak bytes (x) against the
measured time per iteration (y), with the paper's headline point (95 % memory saved for +33 %
time, relative to standard BPTT) marked."""

import pandas as pd
from pipeline_common import load_published, plotting, save_figure, start

MARKERS = {"full": "s", "full-fused": "P", "torch-checkpoint": "X", "full-plan": "s",
           "chen": "^", "chen-recursive": "v", "chen-measured": "<", "hsm": "o", "ism": "D",
           "msm": "*", "hsm-measured": "h", "msm-measured": "p"}


def main(smk):
    start(smk)
    plt, sns = plotting()
    df = pd.read_csv(smk.input.csv, dtype={"budget_requested": str})
    T = int(smk.params.seq_len)
    d = df[(df.seq_len == T) & (df.status == "ok") & df.peak_bytes.notna()].copy()
    d["peak_MiB"] = d.peak_bytes / 2**20
    fig, ax = plt.subplots(figsize=(7, 4.6))
    methods = list(dict.fromkeys(d.method))
    pal = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    for m in methods:
        g = d[d.method == m].sort_values("peak_MiB")
        ax.plot(g.peak_MiB, g.time_median_s, marker=MARKERS.get(m, "o"), ms=7, lw=0.8,
                color=pal[m], label=m)
    full = d[d.method == "full"]
    if len(full):
        h = load_published(smk.input.published)["headline"]
        f = full.iloc[0]
        x = (1 - h["memory_saved_fraction"]) * f.peak_MiB
        y = h["time_ratio"] * f.time_median_s
        ax.scatter([x], [y], marker="o", s=180, facecolors="none", edgecolors="red", lw=1.5,
                   zorder=6, label=f"paper: {100 * (1 - h['memory_saved_fraction']):.0f}% of "
                                   f"full's memory, ×{h['time_ratio']:.3f} its time")
    ax.set_xscale("log")
    ax.set_xlabel("measured peak memory (MiB, live tensors above baseline)")
    ax.set_ylabel("time per iteration (s)")
    if len(d):
        w = d.iloc[0]
        ax.set_title(f"T = {T}: LSTM {w.input_size}→{w.hidden}, batch {w.batch}, {w.device}",
                     fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
