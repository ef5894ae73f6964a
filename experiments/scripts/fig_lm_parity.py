"""Loss curves of results/lm_parity.csv (written by lm_parity.py) -> figures/lm_parity.{png,pdf}.

    python experiments/scripts/fig_lm_parity.py [--csv results/lm_parity.csv] [--out figures/lm_parity]
"""


import argparse
import math

import pandas as pd
from pipeline_common import ROOT, plotting, save_figure, start

ORDER = ("gru", "rev-gru", "lstm", "rev-lstm")
STYLE = {"gru": ("C0", "-"), "rev-gru": ("C0", "--"), "lstm": ("C3", "-"),
         "rev-lstm": ("C3", "--")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0] or None)
    ap.add_argument("--csv", default=str(ROOT / "results" / "lm_parity.csv"))
    ap.add_argument("--out", default=str(ROOT / "figures" / "lm_parity"))
    args = ap.parse_args(argv)
    df = pd.read_csv(args.csv)
    missing = {"model", "step", "train_loss_nats", "eval_bpc"} - set(df.columns)
    if missing:
        raise ValueError(f"{args.csv} lacks columns {sorted(missing)}")
    plt, _ = plotting()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in [m for m in ORDER if m in set(df.model)] + \
            sorted(set(df.model) - set(ORDER)):
        d = df[df.model == name].sort_values("step")
        color, ls = STYLE.get(name, ("0.3", ":"))
        tr = d.dropna(subset=["train_loss_nats"])
        ax1.plot(tr.step, tr.train_loss_nats / math.log(2), color=color, ls=ls, label=name)
        last = d.iloc[-1]
        ax2.plot(d.step, d.eval_bpc, color=color, ls=ls, marker="o", ms=3,
                 label=f"{name}: {last.eval_bpc:.3f} bpc at step {int(last.step)}")
    ax1.set_xlabel("training step")
    ax1.set_ylabel("train loss (bits per byte)")
    ax1.set_title("training")
    ax1.legend()
    ax2.set_xlabel("training step")
    ax2.set_ylabel("held-out loss (bits per byte)")
    ax2.set_title("evaluation")
    ax2.set_ylim(top=min(float(df.eval_bpc.max()), 8.5))
    ax2.legend(fontsize=8)
    r = df.iloc[0]
    fig.suptitle(f"byte-level LMs on stdlib sources: hidden {r.get('hidden', '?')}, "
                 f"seq {r.get('seq_len', '?')}, batch {r.get('batch', '?')}, "
                 f"max_forget {r.get('max_forget', '?')}, seed {r.get('seed', '?')}",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, [f"{args.out}.png", f"{args.out}.pdf"])
    print(f"wrote {args.out}.png and .pdf")


if __name__ == "__main__":
    if "snakemake" in globals():  # the pipeline's rule fig_lm_parity
        start(snakemake)  # noqa: F821
        main(["--csv", snakemake.input.csv,  # noqa: F821
              "--out", snakemake.output[0][: -len(".png")]])  # noqa: F821
    else:
        main()
