"""Fig. 2b: time of one training iteration against sequence length, as the per-round ratio to
standard BPTT measured inside each length's comparison group (median, bars Q1 to Q3), for the
HSM budgets of Fig. 2a and the other baselines; dashed: the unit-cost model (C + 2T) / (3T)."""

import groups
from pipeline_common import plotting, save_figure, start


def main(smk):
    start(smk)
    plt, sns = plotting()
    df = groups.load(smk.input.csv)
    p = smk.params
    ok = df[(df.status == "ok") & df.group.str.startswith("fig2b_T") & df.ratio_median.notna()]
    ok = ok[ok.seq_len.isin(set(p.lengths))].copy()
    hsm = ok[ok.method == "hsm"].copy()
    hsm["m"] = hsm.budget_requested.astype(int)
    hsm = hsm[hsm.m.isin([int(b) for b in p.budgets])]
    others = ok[(ok.method != "hsm") & (ok.label != ok.group_baseline)]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    budgets = sorted(hsm.m.unique())
    pal = sns.color_palette("viridis", max(1, len(budgets)))
    for color, m in zip(pal, budgets):
        g = hsm[hsm.m == m].sort_values("seq_len")
        ax.errorbar(g.seq_len, g.ratio_median,
                    yerr=[g.ratio_median - g.ratio_q1, g.ratio_q3 - g.ratio_median],
                    marker="o", ms=4, capsize=2, lw=1.4, color=color,
                    label=f"BPTT-HSM, m = {m}")
        ax.plot(g.seq_len, (g.forward_ops + 2 * g.seq_len) / (3 * g.seq_len), ls="--", lw=1,
                color=color)
    for k, (label, g) in enumerate(others.groupby("label")):
        g = g.sort_values("seq_len")
        ax.errorbar(g.seq_len, g.ratio_median,
                    yerr=[g.ratio_median - g.ratio_q1, g.ratio_q3 - g.ratio_median],
                    marker="s", ms=4, capsize=2, lw=1.2, color=str(0.2 + 0.25 * k), label=label)
    base = ok.group_baseline.dropna().unique()
    ax.axhline(1.0, color="0.4", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(f"time / time of {', '.join(base) or 'the baseline'} (same group, per round)")
    if len(ok):
        w = ok.iloc[0]
        ax.set_title(f"{w.model.upper()} {w.input_size}→{w.hidden}, batch {w.batch}, "
                     f"{w.device}; dashed: unit-cost model (C+2T)/3T", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
