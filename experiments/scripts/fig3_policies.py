"""Fig. 3: the optimal BPTT-HSM policies for m = 4 (t = 4 and t = 10), drawn op by op.

x: position in the execution order; y: time step. Plain forwards are grey dots, forwards that
store a hidden state are blue squares (push), core forwards orange, backwards red triangles;
the line joins consecutive forwards of one run.
"""

import pandas as pd
from pipeline_common import plotting, save_figure, start

STYLE = {("forward", "none"): dict(marker="o", color="0.55", s=18, label="forward (nothing kept)"),
         ("forward", "hidden"): dict(marker="s", color="tab:blue", s=40, label="forward, push h"),
         ("forward", "internal"): dict(marker="D", color="tab:green", s=40,
                                       label="forward, push internal"),
         ("forward", "core"): dict(marker="o", color="tab:orange", s=40,
                                   label="forward into the core"),
         ("backward", ""): dict(marker="v", color="tab:red", s=40, label="backward"),
         ("drop", "hidden"): dict(marker="x", color="tab:blue", s=30, label="pop h")}


def main(smk):
    start(smk)
    plt, sns = plotting()
    ops = pd.read_csv(smk.input.ops, keep_default_na=False)
    summary = pd.read_csv(smk.input.summary)
    lengths = sorted(ops.seq_len.unique())
    fig, axes = plt.subplots(1, len(lengths), figsize=(4 + 3.2 * len(lengths), 3.6),
                             gridspec_kw={"width_ratios": [max(8, ops[ops.seq_len == t].shape[0])
                                                           for t in lengths]})
    if len(lengths) == 1:
        axes = [axes]
    seen = set()
    for ax, t in zip(axes, lengths):
        d = ops[(ops.seq_len == t) & (ops.kind != "drop")].reset_index(drop=True)
        d["x"] = range(len(d))
        fw = d[d.kind == "forward"]
        # join consecutive forwards (one run)
        for i in range(1, len(d)):
            a, b = d.iloc[i - 1], d.iloc[i]
            if a.kind == b.kind == "forward" and b.step == a.step + 1:
                ax.plot([a.x, b.x], [a.step, b.step], color="0.75", lw=1, zorder=1)
        for (kind, keep), st in STYLE.items():
            sel = d[(d.kind == kind) & (d.keep.astype(str) == keep)]
            if sel.empty:
                continue
            kw = dict(st)
            label = kw.pop("label")
            ax.scatter(sel.x, sel.step, zorder=3, label=None if label in seen else label, **kw)
            seen.add(label)
        s = summary[summary.seq_len == t].iloc[0]
        ax.set_title(f"t = {t}, m = {s.memory}: {s.forward_ops} forwards, "
                     f"{s.backward_ops} backwards, peak {s.peak_memory}", fontsize=9)
        ax.set_xlabel("execution order")
        ax.set_ylabel("time step")
        ax.set_yticks(range(1, t + 1))
        del fw
    fig.legend(loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.2))
    fig.suptitle("Optimal BPTT-HSM policies (Fig. 3)", y=1.02)
    save_figure(fig, smk.output)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
