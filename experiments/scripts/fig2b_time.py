"""Fig. 2b: measured time of one training iteration against sequence length, for the HSM
budgets of Fig. 2a and the standard-BPTT baselines (median, bars from Q1 to Q3)."""

import pandas as pd
from pipeline_common import plotting, save_figure, start


def main(smk):
    start(smk)
    plt, sns = plotting()
    df = pd.read_csv(smk.input.csv, dtype={"budget_requested": str})
    p = smk.params
    lengths = set(p.lengths)
    budgets = {str(b) for b in p.budgets}
    ok = df[(df.status == "ok") & df.seq_len.isin(lengths)]
    hsm = ok[(ok.method == "hsm") & ok.budget_requested.isin(budgets)].copy()
    hsm["label"] = [f"BPTT-HSM, m = {b}" for b in hsm.budget_requested]
    base = ok[ok.method.isin(p.baselines) & ~(ok.method == "hsm")].copy()
    base = base[base.budget_token.isin(["none", "u1000000"])]
    base["label"] = base.method
    d = pd.concat([hsm, base]).sort_values(["label", "seq_len"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    order = sorted(hsm.label.unique(), key=lambda s: int(s.rsplit(" ", 1)[-1])) + \
        sorted(base.label.unique())
    colors = dict(zip(order, sns.color_palette("viridis", len(hsm.label.unique())) +
                      [(0.55, 0.55, 0.55), (0.3, 0.3, 0.3), (0.1, 0.1, 0.1)][: base.label.nunique()]))
    for label in order:
        g = d[d.label == label]
        ax.errorbar(g.seq_len, g.time_median_s,
                    yerr=[g.time_median_s - g.time_q1_s, g.time_q3_s - g.time_median_s],
                    marker="o", ms=4, capsize=2, lw=1.4, label=label, color=colors[label])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("time per iteration (s)")
    w = ok.iloc[0] if len(ok) else None
    if w is not None:
        ax.set_title(f"LSTM {w.input_size}→{w.hidden}, batch {w.batch}, {w.device} "
                     f"({w.threads} thread{'s' if w.threads != 1 else ''})", fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
