"""<card folder>/REPORT.md: one GPU card's reproduction report, from that card's committed run.

Reads only the card's own files (card.yaml, its group CSVs, DEVICE.txt, the CUDA test log,
its wall-time files) and ``paper/published.json``; never another card's. Every ratio divides
two times of the same round of one comparison group (``groups.py``); a group the card's run
planned (card.yaml ``planned``) but did not finish is shown as not measured, and so is every
claim that needs it. The hardware-free theory is the CPU report's (paper/REPORT.md).
"""

import os
import re
import statistics
import sys
from pathlib import Path

import groups
import pandas as pd
from pipeline_common import atomic_write_text, load_published, start, table_markdown

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))
import gpurun  # noqa: E402

NOT_MEASURED = "**not measured**"


def verdict(ok: bool, yes="reproduced", no="differs") -> str:
    return f"**{yes}**" if ok else f"**{no}**"


def mib(b) -> str:
    return f"{b / 2**20:,.1f}"


def rq(r) -> str:
    """A row's in-group ratio to the baseline: median [Q1–Q3] over the rounds."""
    return f"{r.ratio_median:.3f} [{r.ratio_q1:.3f}–{r.ratio_q3:.3f}]"


def between(a, b) -> str:
    r = groups.ratio_between(a, b)
    return f"×{r['median']:.2f} [{r['q1']:.2f}–{r['q3']:.2f}]"


def speed_word(a, b) -> str:
    r = groups.ratio_between(a, b)
    return "faster" if r["q3"] < 1 else "slower" if r["q1"] > 1 else "same within the rounds"


def device_info(rec) -> dict:
    info = {"smi": None, "driver": None, "cuda": None, "torch_line": None}
    p = Path(rec["folder"]) / rec.get("device", "DEVICE.txt")
    if not p.exists():
        return info
    text = p.read_text(encoding="utf-8", errors="replace")
    m = re.search(r"^GPU 0: .*$", text, flags=re.M)
    info["smi"] = m.group(0).strip() if m else None
    m = re.search(r"Driver Version: (\S+)", text)
    info["driver"] = m.group(1) if m else None
    m = re.search(r"CUDA Version: (\S+)", text)
    info["cuda"] = m.group(1) if m else None
    m = re.search(r"^torch .*$|^\d+\.\d+\.\d+\+\S+$", text, flags=re.M)
    info["torch_line"] = m.group(0).strip() if m else None
    return info


def cuda_tests(rec) -> str:
    p = Path(rec["folder"]) / rec.get("cuda_tests", "cuda_tests.log")
    if not p.exists():
        return "not recorded"
    lines = [ln for ln in p.read_text(errors="replace").splitlines()
             if re.search(r"\d+ (passed|failed)", ln)]
    return f"`{lines[-1].strip()}`" if lines else "log without a pytest summary"


def main(smk):
    start(smk)
    carddir = smk.params.carddir
    cfg = smk.params.config
    thr = cfg["report"]
    rec = gpurun.load_card(carddir)
    pub = load_published(smk.input.published)
    hl = pub["headline"]
    data = {Path(p).stem: groups.load(p) for p in smk.input.csvs}
    planned = list(rec["planned"])
    names = planned + [g for g in sorted(data) if g not in planned]
    walls = gpurun.wall_times(rec)
    dev = device_info(rec)
    rows_all = pd.concat(list(data.values()), ignore_index=True) if data else pd.DataFrame()
    rel = os.path.relpath("paper/REPORT.md", carddir)
    fig = "report/figures"
    md = []
    card = rec.get("card") or "unknown card"
    md.append(f"# GPU reproduction report: {card} (`{carddir}/`)\n\n"
              "*Gruslys, Munos, Danihelka, Lanctot, Graves. Memory-Efficient Backpropagation "
              "Through Time. NeurIPS 2016 (arXiv:1606.03401): the paper's measured claims on "
              "one GPU.*\n\n"
              "> **Generated file — do not edit.** `snakemake all --configfile "
              "experiments/config/gpu.yaml` rewrites it (rule `gpu_report`, script "
              "`experiments/scripts/report_gpu.py`) from this card's committed run only: "
              f"`{carddir}/card.yaml` names its groups; nothing here was measured while "
              "building it and nothing comes from another card. The paper's numbers are read "
              "from `paper/published.json`. The hardware-free theory (every dynamic-programming "
              f"number of the paper) is in the CPU report, [`paper/REPORT.md`]({rel}). This "
              f"report alone: `snakemake {carddir}/REPORT.md --cores 2 --configfile "
              "experiments/config/gpu.yaml`.")

    # -- the machine -----------------------------------------------------------------------
    prov = [f"- **Card**: {card}"
            + (f" (`nvidia-smi -L`: `{dev['smi']}`)" if dev["smi"] else "")
            + (f"; driver {dev['driver']}, CUDA {dev['cuda']} (`nvidia-smi`)." if dev["driver"]
               else "; driver and CUDA version not recorded (the run's DEVICE.txt holds no "
                    "`nvidia-smi` table).")]
    if len(rows_all):
        def uniq(col):
            return ", ".join(f"`{v}`" for v in sorted(rows_all[col].dropna().astype(str).unique()))
        commits = sorted({(str(c)[:7], bool(d) if pd.notna(d) else False) for c, d in
                          zip(rows_all.git_commit, rows_all.git_dirty)})
        prov.append(f"- **torch build**: {uniq('torch_version')}; Python "
                    f"{uniq('python_version')}; device as torch names it {uniq('device_model')}.")
        prov.append("- **membptt commit(s)** of the groups: "
                    + ", ".join(f"`{c}`" + (" (uncommitted changes)" if d else "")
                                for c, d in commits)
                    + f"; host(s) {uniq('hostname')}; measured "
                    f"{rows_all.timestamp.min()} to {rows_all.timestamp.max()}.")
        warn = groups.mixed_warning(groups.runs_summary(rows_all))
        if warn:
            prov.append(warn)
    prov.append(f"- **CUDA tests** (`pytest -m cuda`): {cuda_tests(rec)}.")
    md.append("## The machine\n\n" + "\n".join(prov))

    # -- verdicts --------------------------------------------------------------------------
    verdicts = []
    T_h = int(hl["seq_len"])
    tg_name = f"tradeoff_T{T_h}"
    tg = data.get(tg_name)
    tok = tg[tg.status == "ok"] if tg is not None else None

    # headline
    claim = (f"Headline: ISM at 5 % memory, T = {T_h}, stepped cell: "
             f"{100 * hl['memory_saved_fraction']:.0f} % memory saved for about a third more "
             "time")
    paper = f"memory ×{1 - hl['memory_saved_fraction']:.2f}, time ×{hl['time_ratio']}"
    if tok is None:
        verdicts.append([claim, paper, "group not measured on this card", tg_name,
                         NOT_MEASURED])
    else:
        base = tok[tok.label == tok.group_baseline]
        ism = tok[(tok.method == "ism") & (tok.budget_requested == "5%")]
        if len(base) and len(ism):
            b, r = base.iloc[0], ism.iloc[0]
            mr = r.peak_bytes / b.peak_bytes
            model = (r.forward_ops + 2 * T_h) / (3 * T_h)
            verdicts.append([claim, paper,
                             f"peak ×{mr:.3f} of {b.label}'s ({mib(r.peak_bytes)} of "
                             f"{mib(b.peak_bytes)} MiB), time ×{rq(r)} (unit-cost model "
                             f"×{model:.3f})", tg_name,
                             "memory " + verdict(mr <= thr["headline_memory_ratio_max"])
                             + "; time " + verdict(r.ratio_median <= (1 + thr["time_tolerance"])
                                                   * hl["time_ratio"])])
        else:
            verdicts.append([claim, paper, "no ok `ism:memory=5%` row in the group", tg_name,
                             NOT_MEASURED])

    # Fig. 2b
    f2_planned = sorted({int(g.split("_T")[1]) for g in names if g.startswith("fig2b_T")})
    hsm = (rows_all[(rows_all.status == "ok") & rows_all.group.str.startswith("fig2b_T")
                    & (rows_all.method == "hsm")] if len(rows_all) else pd.DataFrame())
    budgets = sorted({int(b) for b in hsm.budget_requested}) if len(hsm) else []
    all_pts = []
    for m in budgets:
        h = hsm[hsm.budget_requested == str(m)].sort_values("seq_len")
        model = (h.forward_ops + 2 * h.seq_len) / (3 * h.seq_len)
        dev_max = float(((h.ratio_median / model) - 1).abs().max())
        all_pts += list(zip(h.ratio_median, model))
        cells = [f"T = {r.seq_len:,}: ×{r.ratio_median:.2f} (model ×{mo:.2f})"
                 for r, mo in zip(h.itertuples(), model)]
        missing = [t for t in f2_planned if t not in set(h.seq_len)]
        cells += [f"T = {t:,}: not measured" for t in missing]
        verdicts.append([f"Fig. 2b: HSM m = {m}, time / plain stepped BPTT against the "
                         "paper's model (C/t + 2)/3",
                         "measured curves (hardware unknown); model from C(t, m)",
                         "; ".join(cells),
                         ", ".join(sorted(set(h.group), key=lambda g: int(g.split("_T")[1]))),
                         verdict(dev_max <= thr["time_tolerance"],
                                 f"reproduced (within {100 * dev_max:.0f} % of the model)",
                                 f"differs (up to {100 * dev_max:.0f} % off the model)")
                         + ("; some lengths not measured" if missing else "")])
    if not budgets:
        verdicts.append(["Fig. 2b: HSM time against length", "measured curves",
                         "no Fig. 2b group measured on this card", "fig2b_T*", NOT_MEASURED])
    elif len(all_pts) > 2:
        corr = pd.DataFrame(all_pts).corr().iloc[0, 1]
        verdicts.append(["Fig. 2b overall: measured ratios follow the model's shape",
                         "measured curves", f"correlation {corr:.2f} over {len(all_pts)} "
                         "points (each ratio inside its length's group)", "fig2b_T*",
                         verdict(bool(corr >= thr["fig2b_min_correlation"]),
                                 "reproduced (qualitatively)", "differs")])

    # the front: membptt (MSM on fused blocks) against cuDNN and the fused checkpoint
    front_md = ""
    if tok is None:
        verdicts.append(["(ours) membptt on fused blocks against cuDNN full BPTT and "
                         "torch.utils.checkpoint over fused segments", "—",
                         "group not measured on this card", tg_name, NOT_MEASURED])
    else:
        mm = tok[tok.method == "msm-measured"].sort_values("peak_bytes")
        fused = tok[tok.label == "full-fused"]
        ck = tok[tok.method == "torch-checkpoint-fused"].sort_values("peak_bytes")
        lines = ["| torch.utils.checkpoint over fused segments | its peak MiB | its time "
                 "×plain | fastest membptt point at ≤ its peak | membptt / checkpoint time "
                 "(same rounds) | |", "|---|---|---|---|---|---|"]
        tally = {"faster": [], "slower": [], "same within the rounds": [], "not reached": []}
        for c in ck.itertuples():
            k = str(c.params).split()[0].replace("segments=", "K = ") if pd.notna(
                c.params) else c.label
            fit = mm[mm.peak_bytes <= c.peak_bytes]
            if len(fit):
                b = fit.sort_values("ratio_median").iloc[0]
                word = speed_word(b, c)
                tally[word].append(k)
                lines.append(f"| {k} | {mib(c.peak_bytes)} | {rq(c)} | `{b.label}` "
                             f"({mib(b.peak_bytes)} MiB) | {between(b, c)} | {word} |")
            else:
                tally["not reached"].append(k)
                low = f"{mib(mm.peak_bytes.min())} MiB" if len(mm) else "no membptt row"
                lines.append(f"| {k} | {mib(c.peak_bytes)} | {rq(c)} | none (membptt's "
                             f"smallest peak here: {low}) | — | not reached |")
        infeasible = tg[(tg.method == "msm-measured") & (tg.status != "ok")]
        note = ""
        if len(infeasible):
            note = ("\n\nNot run: " + "; ".join(f"`{r.label}`: {r.status} ({r.message})"
                                                for r in infeasible.itertuples()) + ".")
        cudnn = ""
        if len(fused) and len(mm):
            f = fused.iloc[0]
            cudnn = "; ".join(f"`{r.label}`: peak ×{r.peak_bytes / f.peak_bytes:.3f} of "
                              f"cuDNN's, time {between(r, f)} of cuDNN's"
                              for r in mm.itertuples())
            verdicts.append(["(ours) membptt on fused blocks against cuDNN full BPTT "
                             "(`full-fused`)", "—", cudnn, tg_name,
                             "less memory, " + ", ".join(sorted({speed_word(r, f) for r in
                                                                  mm.itertuples()}))])
        summary = "; ".join(f"{w} at {', '.join(ks)}" for w, ks in tally.items() if ks)
        verdicts.append(["(ours) membptt on fused blocks against torch.utils.checkpoint over "
                         "fused segments at equal or lower memory", "—",
                         summary or "no checkpoint rows", tg_name,
                         "**yes**" if tally["faster"] and not tally["slower"] else
                         "**no**" if tally["slower"] or tally["not reached"] else
                         "**within noise**"])
        front_md = ("### membptt against the fused checkpoint front (one group: "
                    f"`{tg_name}`)\n\n" + "\n".join(lines) + note
                    + (f"\n\nAgainst cuDNN full BPTT: {cudnn}." if cudnn else ""))

    # gradients
    ge = rows_all[(rows_all.status == "ok") & rows_all.grad_error.notna()] if len(
        rows_all) else pd.DataFrame()
    if len(ge):
        plans = ge[~ge.method.isin(["full", "full-fused"]) & ge.exact.astype(bool)]
        cud = ge[ge.method == "full-fused"].grad_error
        xmax = float(plans.grad_error.max()) if len(plans) else float("nan")
        cmax = float(cud.max()) if len(cud) else float("nan")
        ok = xmax <= thr["grad_error_max"]
        noise = not ok and len(cud) and xmax <= cmax
        verdicts.append(["(ours) every exact method's gradients equal standard BPTT's",
                         "exact by construction",
                         f"largest relative error {xmax:.1e} over {len(plans)} plan rows; "
                         f"cuDNN's own against the stepped cell {cmax:.1e} (float32)",
                         "every measured group",
                         "**yes**" if ok else "**yes, at float32 kernel noise** (≤ cuDNN's own "
                         "difference)" if noise else "**no**"])
    else:
        verdicts.append(["(ours) every exact method's gradients equal standard BPTT's",
                         "exact by construction", "no gradient check in these groups (the "
                         "CUDA tests check the executor's gradients on this card)", "—",
                         NOT_MEASURED])

    # reversible groups
    fbits = pub["reversible_rnn"]["float_state_bits"]
    lo, hi = pub["reversible_rnn"]["activation_memory_reduction"]
    rev_lines = []
    for g in [n for n in names if n.startswith("reversible_")]:
        d = data.get(g)
        claim = f"(MacKay et al. 2018) reversible RNN memory, `{g}`"
        if d is None:
            verdicts.append([claim, f"{lo}–{hi}×", "group not measured on this card", g,
                             NOT_MEASURED])
            rev_lines.append(f"| `{g}` | not measured | | | |")
            continue
        ok = d[d.status == "ok"].set_index("method", drop=False)
        if "reversible" not in ok.index or "full" not in ok.index:
            verdicts.append([claim, f"{lo}–{hi}×", "no ok reversible and full rows", g,
                             NOT_MEASURED])
            continue
        rev, full = ok.loc["reversible"], ok.loc["full"]
        bits = fbits / float(rev.buffer_bits_allocated)
        verdicts.append([claim, f"{lo}–{hi}×",
                         f"{fbits}-bit state / allocated buffer bits ×{bits:.1f}; peak full / "
                         f"reversible ×{full.peak_bytes / rev.peak_bytes:.0f}; time "
                         f"{between(rev, full)} of full's", g,
                         verdict(bits >= lo, f"reproduced (≥ {lo}× in bits)", "differs")])
        msm = d[(d.method == "msm") & (d.status == "ok")]
        rev_lines.append(f"| `{g}` | {rev.model}, T = {rev.seq_len}, hidden {rev.hidden}, "
                         f"batch {rev.batch} | {mib(full.peak_bytes)} / {mib(rev.peak_bytes)} "
                         f"| {between(rev, full)} | "
                         + ("; ".join(f"`{r.label}`: peak ×{r.peak_bytes / rev.peak_bytes:.2f},"
                                      f" time {between(r, rev)}" for r in msm.itertuples())
                            or "—") + " |")

    summary = pd.DataFrame(verdicts, columns=["claim", "paper", "this card", "group",
                                              "verdict"])
    md.append("## Verdicts at a glance\n\nEach of the paper's measured claims beside this "
              "card's number, each from one comparison group (one `membptt bench` process, "
              "methods timed interleaved, every ratio taken round by round inside it). "
              "Tolerances: `report` in the config (time within "
              f"{100 * thr['time_tolerance']:.0f} %, headline memory ratio at most "
              f"{thr['headline_memory_ratio_max']}).\n\n" + table_markdown(summary).strip())

    # -- the groups ------------------------------------------------------------------------
    gl = ["| group | on this card | rows ok / all | T | rounds (warm-up) | wall s | measured "
          "at (UTC) | commit |", "|---|---|---|---|---|---|---|---|"]
    for g in names:
        d = data.get(g)
        plan = "" if g in planned else " (not in the run's plan)"
        if d is None:
            gl.append(f"| `{g}` | {NOT_MEASURED}{plan} | | | | | | |")
            continue
        r0 = d.iloc[0]
        gl.append(f"| `{g}` | measured{plan} | {int((d.status == 'ok').sum())} / {len(d)} | "
                  f"{int(r0.seq_len):,} | {int(r0.repeats)} ({int(r0.warmup)}) | "
                  + (f"{walls[g]:.0f}" if g in walls else "not recorded")
                  + f" | {r0.timestamp} | `{str(r0.git_commit)[:7]}` |")
    md.append("## The comparison groups of this card's run\n\nThe groups the run set out to "
              "measure (`planned` in `card.yaml`) and any other it committed; wall seconds "
              "from the run's timing files.\n\n" + "\n".join(gl))

    # -- Fig. 2b -----------------------------------------------------------------------------
    f2 = [g for g in names if g.startswith("fig2b_T")]
    if f2:
        head = ["T", "plain stepped BPTT (s)", "cuDNN full BPTT ×plain"] + \
               [f"HSM m = {m} ×plain (model)" for m in budgets]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for g in sorted(f2, key=lambda g: int(g.split("_T")[1])):
            T = int(g.split("_T")[1])
            d = data.get(g)
            if d is None:
                lines.append(f"| {T:,} | {NOT_MEASURED} |" + " |" * (len(head) - 2))
                continue
            ok = d[d.status == "ok"]
            base = ok[ok.label == ok.group_baseline]
            fu = ok[ok.label == "full-fused"]
            cells = [f"{T:,}", f"{base.iloc[0].time_median_s:.3f}" if len(base) else "—",
                     rq(fu.iloc[0]) if len(fu) else "—"]
            for m in budgets:
                h = ok[(ok.method == "hsm") & (ok.budget_requested == str(m))]
                if len(h):
                    r = h.iloc[0]
                    cells.append(f"{rq(r)} ({(r.forward_ops + 2 * T) / (3 * T):.2f})")
                else:
                    cells.append("—")
            lines.append("| " + " | ".join(cells) + " |")
        longest = max((int(g.split("_T")[1]) for g in f2 if g in data), default=None)
        peaks = ""
        if longest:
            d = data[f"fig2b_T{longest}"]
            ok = d[d.status == "ok"]
            peaks = ("\n\nMeasured peaks at T = " + f"{longest:,}: "
                     + ", ".join(f"`{r.label}` {mib(r.peak_bytes)} MiB" for r in
                                 ok.itertuples()) + ".")
        md.append("## Fig. 2b: time per iteration against length\n\n"
                  f"![Fig. 2b]({fig}/fig2b_time.png)\n\nPer-round ratios to plain stepped "
                  "BPTT (`nn.LSTMCell` under autograd) inside each length's group, median "
                  "[Q1–Q3]; the model is the paper's unit-cost ratio (C + 2T) / 3T with C the "
                  "plan's forward operations.\n\n" + "\n".join(lines) + peaks)

    # -- trade-off ---------------------------------------------------------------------------
    if tg is not None:
        lines = ["| method | status | peak MiB | time s | ×plain [Q1–Q3] | forward ops | "
                 "grad error |", "|---|---|---|---|---|---|---|"]
        for r in tg.sort_values(["status", "peak_bytes"], ascending=[False, False]).itertuples():
            if r.status == "ok":
                lines.append(f"| `{r.label}` | ok | {mib(r.peak_bytes)} | "
                             f"{r.time_median_s:.3f} | {rq(r)} | {int(r.forward_ops):,} | "
                             + (f"{r.grad_error:.1e}" if pd.notna(r.grad_error) else "—")
                             + " |")
            else:
                lines.append(f"| `{r.label}` | {r.status} | | | | | |")
        md.append(f"## Memory–time trade-off at T = {T_h} (`{tg_name}`)\n\n"
                  f"![trade-off]({fig}/tradeoff_memory_time.png)\n\n" + "\n".join(lines)
                  + "\n\n" + front_md)
    else:
        md.append(f"## Memory–time trade-off at T = {T_h}\n\n`{tg_name}`: not measured on "
                  "this card.")

    pl = rows_all[(rows_all.status == "ok") & rows_all.predicted_peak_bytes.notna()
                  & ~rows_all.group.str.startswith("reversible_")] if len(rows_all) else []
    if len(pl):
        over = (pl.peak_bytes - pl.predicted_peak_bytes) / 2**20
        tr = (pl.time_median_s / pl.predicted_time_s).dropna()
        md.append("## Predicted against measured\n\n"
                  f"![predicted vs measured]({fig}/predicted_vs_measured.png)\n\n"
                  f"Over {len(pl)} plan rows, measured peak minus the planner's stored states: "
                  f"{over.min():.2f}–{over.max():.2f} MiB (the working set). Measured time / "
                  "predicted time: "
                  + (f"median {statistics.median(tr):.2f} (range {tr.min():.2f}–"
                     f"{tr.max():.2f})." if len(tr) else "no predicted times."))

    if rev_lines:
        md.append("## Beside the paper: reversible RNNs (MacKay et al. 2018)\n\n"
                  "| group | model | peak full / reversible (MiB) | reversible time / full "
                  "(same rounds) | MSM of the same cell / reversible |\n|---|---|---|---|---|\n"
                  + "\n".join(rev_lines)
                  + (f"\n\n![reversible]({fig}/reversible_memory_time.png)"
                     if any(g.startswith("reversible_") for g in data) else ""))

    # -- the one-command run's expected time on this card (estimate) -------------------------
    est = gpurun.estimate_card(cfg, carddir)
    fitd = est["fit"]
    if fitd is None:
        md.append("## Expected time of the GPU run on this card\n\nFewer than two groups "
                  "with a wall time: no estimate.")
    else:
        lines = ["| group of the config | methods | s per iteration (all methods) | passes | "
                 "expected wall s | how the methods are priced |", "|---|---|---|---|---|---|"]
        for g in est["groups"]:
            how = "; ".join(f"`{k}`: {v}" for k, v in g["priced"].items()) or \
                  "every method measured in this group here"
            if g["unpriced"]:
                how += "; not priced (nothing measured here): " + ", ".join(g["unpriced"])
            lines.append(f"| `{g['group']}` | {g['methods']} | {g['per_iteration_s']:.2f} | "
                         f"{g['passes']} | {g['seconds']:.0f} | {how} |")
        md.append("## Expected time of the GPU run on this card (an estimate)\n\n"
                  f"`experiments/gpu/run.sh` with the config this report was built with "
                  f"(`{cfg['name']}`), priced from this card's committed groups only "
                  "(`python3 experiments/gpu/gpurun.py estimate`): per group "
                  f"{fitd['fixed_s']:.1f} s + {fitd['factor']:.2f} × passes × seconds per "
                  f"iteration, fitted to this card's {fitd['points']} groups with a wall time "
                  f"(largest error {100 * fitd['max_rel_error']:.0f} %). **An estimate, not "
                  "a measurement.**\n\n" + "\n".join(lines)
                  + f"\n\nGroups in all: **{est['total_s']:.0f} s** "
                  f"({est['total_s'] / 60:.1f} min), plus the build and the CUDA tests.")

    atomic_write_text(smk.output.report, "\n\n".join(md).rstrip() + "\n")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
