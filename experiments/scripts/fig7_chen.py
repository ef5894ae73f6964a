"""Fig. 7: BPTT-MSM against Chen's sqrt(t) algorithm.

Left: memory MSM needs for a cost of 2 forwards per step, as a fraction of Chen's
sqrt(t)(1 + beta). Right: cost per step at Chen's memory, MSM beside Chen.
"""

import pandas as pd
from pipeline_common import plotting, save_figure, start


def main(smk):
    start(smk)
    plt, sns = plotting()
    df = pd.read_csv(smk.input.csv)
    df["beta_label"] = [f"β = {b} (α = {a})" for b, a in zip(df.beta, df.alpha)]
    target = float(df.target_cost_per_step.iloc[0])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    sns.lineplot(data=df.dropna(subset=["memory_ratio"]), x="seq_len", y="memory_ratio",
                 hue="beta_label", ax=ax1, palette="viridis", lw=1.4)
    ax1.axhline(1.0, color="0.6", lw=1.5, label="Chen")
    ax1.set_xscale("log")
    ax1.set_xlabel("sequence length t")
    ax1.set_ylabel(f"MSM memory at {target:g} forwards/step ÷ √t(1+β)")
    ax1.set_title("memory at fixed cost")
    ax1.legend(fontsize=8)
    sns.lineplot(data=df, x="seq_len", y="msm_cost_per_step_at_chen_memory",
                 hue="beta_label", ax=ax2, palette="viridis", lw=1.4)
    chen = df.drop_duplicates("seq_len").sort_values("seq_len")
    ax2.plot(chen.seq_len, chen.chen_cost_per_step, color="0.5", lw=1.5, ls="--",
             label="Chen: (2t − √t)/t")
    ax2.set_xscale("log")
    ax2.set_xlabel("sequence length t")
    ax2.set_ylabel("cost per time step C/t")
    ax2.set_title("cost at Chen's memory √t(1+β)")
    ax2.legend(fontsize=8)
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
