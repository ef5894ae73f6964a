"""Fig. 6: HSM vs ISM vs MSM at equal memory, with the lengths where HSM overtakes ISM."""

import pandas as pd
from pipeline_common import plotting, save_figure, start

NAMES = {"hsm": "BPTT-HSM", "ism": "BPTT-ISM", "msm": "BPTT-MSM"}


def main(smk):
    start(smk)
    plt, sns = plotting()
    df = pd.read_csv(smk.input.curves)
    cross = pd.read_csv(smk.input.crossovers)
    ks = sorted(df.budget_internal.unique())
    fig, axes = plt.subplots(1, len(ks), figsize=(5.2 * len(ks), 4), sharey=True)
    if len(ks) == 1:
        axes = [axes]
    for ax, k in zip(axes, ks):
        d = df[df.budget_internal == k].copy()
        d = d[d.seq_len >= 2]
        d["method"] = d.strategy.map(NAMES)
        alpha = int(d.alpha.iloc[0])
        sns.lineplot(data=d, x="seq_len", y="cost_per_step", hue="method", ax=ax,
                     palette={"BPTT-HSM": "tab:blue", "BPTT-ISM": "tab:orange",
                              "BPTT-MSM": "tab:green"}, lw=1.4)
        c = cross[cross.budget_internal == k].iloc[0]
        if pd.notna(c.hsm_first_cheaper_at):
            x = int(c.hsm_first_cheaper_at)
            ax.axvline(x, color="0.4", ls="--", lw=1)
            ax.annotate(f"HSM < ISM from t = {x}", (x, 1.0), xytext=(6, 6),
                        textcoords="offset points", fontsize=8, rotation=90, va="bottom")
        ax.set_xscale("log")
        ax.set_title(f"memory {alpha * k} units = {k} internal states (α = {alpha})", fontsize=10)
        ax.set_xlabel("sequence length t")
        ax.set_ylabel("cost per time step C/t")
        ax.legend(fontsize=8)
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
