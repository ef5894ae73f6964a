"""Memory-time trade-off at one length: each method's front. x: measured peak bytes; y: the
per-round time ratio to the group's baseline (standard BPTT), all from one comparison group.
A checkpoint method's front sweeps its segment count K; a plan method's its budget. The
paper's headline point (95 % memory saved for +33 % time) is marked."""

import groups
from pipeline_common import load_published, plotting, save_figure, start

MARKERS = {"full": "s", "full-fused": "P", "torch-checkpoint": "X",
           "torch-checkpoint-reentrant": "x", "torch-checkpoint-fused": "D",
           "torch-checkpoint-fused-reentrant": "d", "full-plan": "s", "chen": "^",
           "chen-recursive": "v", "chen-measured": "<", "hsm": "o", "ism": "H", "msm": "*",
           "hsm-measured": "h", "msm-measured": "p"}


def main(smk):
    start(smk)
    plt, sns = plotting()
    df = groups.load(smk.input.csv)
    group = f"tradeoff_T{int(smk.params.seq_len)}"
    d = df[(df.group == group) & (df.status == "ok") & df.peak_bytes.notna()
           & df.ratio_median.notna()].copy()
    d["peak_MiB"] = d.peak_bytes / 2**20
    fig, ax = plt.subplots(figsize=(7.4, 4.8))
    methods = list(dict.fromkeys(d.method))
    pal = dict(zip(methods, sns.color_palette("tab20", len(methods))))
    for m in methods:
        g = d[d.method == m].sort_values("peak_MiB")
        ax.errorbar(g.peak_MiB, g.ratio_median,
                    yerr=[g.ratio_median - g.ratio_q1, g.ratio_q3 - g.ratio_median],
                    marker=MARKERS.get(m, "o"), ms=6, lw=0.9, capsize=2, color=pal[m], label=m)
        if m.startswith("torch-checkpoint"):
            for r in g.itertuples():
                k = str(r.params).split()[0].replace("segments=", "K=")
                ax.annotate(k, (r.peak_MiB, r.ratio_median), fontsize=6, xytext=(3, 3),
                            textcoords="offset points", color=pal[m])
    base = d[d.label == d.group_baseline]
    if len(base):
        h = load_published(smk.input.published)["headline"]
        b = base.iloc[0]
        ax.scatter([(1 - h["memory_saved_fraction"]) * b.peak_MiB], [h["time_ratio"]],
                   marker="o", s=180, facecolors="none", edgecolors="red", lw=1.5, zorder=6,
                   label=f"paper: {100 * (1 - h['memory_saved_fraction']):.0f}% of "
                         f"{b.label}'s memory, ×{h['time_ratio']:.3f} its time")
    ax.set_xscale("log")
    ax.set_xlabel("measured peak memory (MiB, live tensors above baseline)")
    base_name = d.group_baseline.iloc[0] if len(d) else "the baseline"
    ax.set_ylabel(f"time / time of {base_name} (same group, per round)")
    if len(d):
        w = d.iloc[0]
        ax.set_title(f"T = {w.seq_len}: {w.model.upper()} {w.input_size}→{w.hidden}, batch "
                     f"{w.batch}, {w.device}; group {group}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
