"""The HSM bound C <= m t^(1+1/m) (and the numeric 4 t^(1+1/m)): exact C / t^(1+1/m) vs t."""

import pandas as pd
from pipeline_common import plotting, save_figure, start


def main(smk):
    start(smk)
    plt, sns = plotting()
    df = pd.read_csv(smk.input.csv)
    df["m"] = [f"m = {m}" for m in df.memory]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sns.lineplot(data=df, x="seq_len", y="ratio", hue="m", palette="viridis", ax=ax, lw=1.4)
    ax.axhline(4, color="tab:red", ls="--", lw=1, label="numeric claim: 4")
    ax.set_xscale("log")
    ax.set_xlabel("sequence length t")
    ax.set_ylabel("C(t, m) / t^(1+1/m)")
    ax.set_title("BPTT-HSM: exact cost against the bound m·t^(1+1/m)")
    ax.legend(fontsize=8, ncol=2)
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
