"""Fig. 2a / 5a / 5b: cost per time step C(t, m)/t against sequence length, one line per budget.

Reads one ``results/theory/curves_<strategy>.csv``; the paper's tabulated values
(``paper/published.json``) are overlaid as black crosses where they exist.
"""

import pandas as pd
from pipeline_common import load_published, plotting, save_figure, start

TITLES = {"hsm": "BPTT-HSM (hidden states only)", "ism": "BPTT-ISM (internal states only)",
          "msm": "BPTT-MSM (mixed), α = {alpha}"}
LEGEND = {"hsm": "m = {b} slots", "ism": "m = {b} internal states",
          "msm": "k = {b} internal states (m = {m})"}
PUBKEY = {"hsm": "hsm", "ism": "ism", "msm": "msm_alpha5"}


def main(smk):
    start(smk)
    plt, sns = plotting()
    df = pd.read_csv(smk.input.csv)
    strategy = smk.wildcards.strategy
    curves = df[df.strategy == strategy].copy()
    full = df[df.strategy == "full"]
    alpha = int(curves.alpha.dropna().iloc[0]) if curves.alpha.notna().any() else None
    curves["budget_label"] = [LEGEND[strategy].format(b=b, m=m)
                              for b, m in zip(curves.budget, curves.memory_units)]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(full.seq_len, full.cost_per_step, color="0.6", lw=2, label="standard BPTT")
    sns.lineplot(data=curves, x="seq_len", y="cost_per_step", hue="budget_label",
                 palette="viridis", ax=ax, drawstyle="steps-post", lw=1.6)
    pub = load_published(smk.input.published)["cost_per_step"]
    ref = pub.get(PUBKEY[strategy], {})
    first = True
    for b, vals in ref.items():
        if isinstance(vals, dict):
            lengths, values = vals["lengths"], vals["values"]
            if strategy == "msm" and alpha:  # keyed by memory units m = alpha * k
                b = int(b) // alpha
        else:
            lengths, values = pub["lengths"], vals
        if int(b) not in set(curves.budget):
            continue
        ax.scatter(lengths, values, marker="x", color="black", zorder=5, s=28,
                   label="paper (published values)" if first else None)
        first = False
    ax.set_xscale("log")
    ax.set_xlabel("sequence length t")
    ax.set_ylabel("cost per time step  C(t, m) / t  (forward ops)")
    ax.set_title(TITLES[strategy].format(alpha=alpha))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, title=None)
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
