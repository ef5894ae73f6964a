"""Reversible RNNs against full BPTT and MSM of the same cell -> figures/reversible_memory_time.*

Reads the reversible comparison groups (results/groups/reversible_<model>_T<T>.csv, one
`membptt bench` process each). Left: the information buffer's bits per state unit per step
(allocated, stored, the paper's optimum) against the 32 bits of a float32 hidden state (the
paper's measure). Right: measured peak live bytes against the per-round time ratio to ``full``
of the same group, for every method of every group (methods that did not run, e.g. MSM when it
cannot fit the reversible peak, are named in the legend with their status).
"""

import groups
import pandas as pd
from pipeline_common import plotting, save_figure, start

KINDS = ("allocated", "stored", "optimal")
MARKERS = {"full": "s", "reversible": "o"}


def main(smk):
    start(smk)
    df = pd.concat([groups.load(p) for p in smk.input.csvs], ignore_index=True)
    ok = df[df.status == "ok"]
    rev = ok[ok.method == "reversible"]
    if rev.empty:
        raise SystemExit("no reversible row with status ok in " + ", ".join(smk.input.csvs))
    plt, _ = plotting()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.8))
    width = 0.8 / len(KINDS)
    for i, kind in enumerate(KINDS):
        vals = rev[f"buffer_bits_{kind}"].astype(float)
        xs = [j + (i - 1) * width for j in range(len(rev))]
        bars = ax1.bar(xs, vals, width, label=kind)
        ax1.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=7)
    ax1.axhline(32, color="k", ls="--", lw=1, label="float32 hidden state (32 bits)")
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(rev)), [f"{r.model}\nT={r.seq_len}, h={r.hidden}"
                                     for r in rev.itertuples()])
    ax1.set_ylabel("buffer bits per unit per step")
    ax1.set_title("information buffer (MacKay et al.'s measure)")
    ax1.legend(fontsize=8)
    for k, (model, g) in enumerate(ok.groupby("model", sort=True)):
        color = f"C{k}"
        for r in g.itertuples():
            ax2.scatter(r.peak_bytes, r.ratio_median, color=color,
                        marker=MARKERS.get(r.method, "^"), s=40)
            ax2.annotate(r.label, (r.peak_bytes, r.ratio_median), fontsize=7,
                         xytext=(4, 3), textcoords="offset points")
        bad = df[(df.model == model) & (df.status != "ok")]
        note = "".join(f"; {b.label}: {b.status}" for b in bad.itertuples())
        ax2.plot([], [], color=color, label=f"{model}{note}")
    ax2.set_xscale("log")
    ax2.set_xlabel("measured peak live bytes (one iteration)")
    ax2.set_ylabel("time / full, same group (median over rounds)")
    ax2.set_title("full BPTT, reversible backward and MSM of the same cell")
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    fig.tight_layout()
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
