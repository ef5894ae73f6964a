"""paper/REPORT.md: the reproduction report, regenerated from the pipeline's CSVs and figures.

Reads only files that rules wrote (declared as this rule's inputs) and ``paper/published.json``;
fills ``paper/report_template.md``. Each claim of the paper gets our number and a verdict.
"""

import json
from pathlib import Path
from string import Template

import pandas as pd
from pipeline_common import atomic_write_text, fmt, load_published, start, table_markdown


def find(paths, name):
    for p in paths:
        if Path(p).name == name:
            return p
    return None


def read_table_md(paths, name):
    p = find(paths, f"{name}.md")
    return Path(p).read_text(encoding="utf-8").strip() if p else "*(not built)*"


def verdict(ok: bool, yes="reproduced", no="differs") -> str:
    return f"**{yes}**" if ok else f"**{no}**"


def main(smk):
    start(smk)
    pub = load_published(smk.input.published)
    inputs = [str(p) for p in smk.input]
    th = {Path(p).stem: p for p in smk.input.theory}
    pv = pd.read_csv(th["paper_values"])
    rows = []  # summary: claim, paper, ours, verdict

    # -- headline ---------------------------------------------------------------------------
    h = pv[pv.group == "headline"].set_index("quantity")
    hl = pub["headline"]
    rows.append({"claim": f"Headline: t = {hl['seq_len']}, {100 * hl['memory_saved_fraction']:.0f}"
                          "% memory saved for about one third more time (ISM, "
                          f"{hl['ism_slots']} internal states)",
                 "paper": f"C = {hl['forward_ops']}, time ×{hl['time_ratio']}",
                 "ours": f"C = {fmt(h.loc['forward_ops', 'ours'], 0)}, time "
                         f"×{h.loc['time_ratio', 'ours']:.4f}, memory saved "
                         f"{100 * h.loc['memory_saved', 'ours']:.0f}%",
                 "verdict": verdict(bool(h.match.all())), "kind": "theory"})
    # -- cost-per-step tables and small tables ------------------------------------------------
    small = pv[pv.group.str.startswith("small_")]
    rows.append({"claim": "Test tables C_HSM, C_ISM, C_MSM (α = 2; α = 3, β = 2), t ≤ 6",
                 "paper": f"{len(small)} values", "ours":
                 f"{int(small.match.sum())}/{len(small)} equal",
                 "verdict": verdict(bool(small.match.all())), "kind": "theory"})
    large = pv[pv.group.str.startswith("large_")]
    rows.append({"claim": "C(1000, m) for HSM, ISM, MSM α = 5", "paper": f"{len(large)} values",
                 "ours": f"{int(large.match.sum())}/{len(large)} equal",
                 "verdict": verdict(bool(large.match.all())), "kind": "theory"})
    cps_md = read_table_md(inputs, "cost_per_step")
    cps_rows = [line for line in cps_md.splitlines() if line.startswith("| ") and "/" in line]
    tol = smk.params.config.get("report", {}).get("tolerance", 5e-4)
    pub_cps = pub["cost_per_step"]
    total = sum(len(v) for k in ("hsm", "ism") for v in pub_cps[k].values()) + sum(
        len(v["values"]) for v in pub_cps["msm_alpha5"].values())
    n_ok = n_all = 0
    for line in cps_rows:
        cell = line.rstrip(" |").rsplit("|", 1)[-1].strip()
        if "/" in cell and cell.replace("/", "").isdigit():
            a, b = cell.split("/")
            n_ok, n_all = n_ok + int(a), n_all + int(b)
    rows.append({"claim": "Cost per step C/t, Fig. 2a (HSM), 5a (ISM), 5b (MSM α = 5)",
                 "paper": "tabulated values",
                 "ours": f"{n_ok}/{n_all} equal within {tol:g}"
                         + ("" if n_all == total else f" ({total - n_all} beyond the lengths "
                                                      "of this configuration)"),
                 "verdict": verdict(n_all > 0 and n_ok == n_all), "kind": "theory"})
    # -- Fig. 3 -------------------------------------------------------------------------------
    f3 = pd.read_csv(th["fig3_summary"])
    f3p = pub["fig3"]
    by_t = f3.set_index("seq_len")
    fig3_ok = True
    fig3_lines = []
    for t, key in ((4, "t4_cost"), (10, "t10_cost")):
        if t in by_t.index:
            r = by_t.loc[t]
            ok = int(r.forward_ops) == f3p[key] and int(r.dp_cost) == f3p[key]
            fig3_ok &= ok
            fig3_lines.append(f"- t = {t}, m = {r.memory}: {r.forward_ops} forward ops "
                              f"(paper {f3p[key]}), {r.backward_ops} backward ops, peak "
                              f"{r.peak_memory} slots; trace: `{r.trace}`")
    trace_ok = 10 in by_t.index and by_t.loc[10].trace == f3p["trace_t10_m4"]
    fig3_lines.append(f"- The t = 10 trace is {'identical to' if trace_ok else 'different from'}"
                      " the paper's (PAPER.md section 7).")
    rows.append({"claim": "Fig. 3: optimal HSM policies, m = 4 (t = 4: cost 7; t = 10: cost 24, "
                          "golden trace)",
                 "paper": f"{f3p['t4_cost']}, {f3p['t10_cost']}, trace",
                 "ours": ", ".join(str(int(by_t.loc[t].forward_ops)) for t in (4, 10)
                                   if t in by_t.index) + (", same trace" if trace_ok
                                                          else ", other trace"),
                 "verdict": verdict(fig3_ok and trace_ok), "kind": "theory"})
    # -- Fig. 6 -------------------------------------------------------------------------------
    cr = pd.read_csv(th["fig6_crossovers"])
    paper6 = dict(zip(pub["fig6"]["budgets_units"], pub["fig6"]["hsm_overtakes_ism_at"]))
    ours6, ok6 = [], True
    for r in cr.itertuples():
        if int(r.memory_units) in paper6:
            ours6.append(f"{r.memory_units} units: t = {r.hsm_first_cheaper_at}")
            ok6 &= pd.notna(r.hsm_first_cheaper_at) and \
                int(r.hsm_first_cheaper_at) == paper6[int(r.memory_units)]
    if ours6:
        rows.append({"claim": "Fig. 6: HSM overtakes ISM (α = 5) at t = 309 (50 units) and 1919 "
                              "(100 units)",
                     "paper": ", ".join(str(v) for v in pub["fig6"]["hsm_overtakes_ism_at"]),
                     "ours": "; ".join(ours6), "verdict": verdict(ok6), "kind": "theory"})
    rows.append({"claim": "MSM is never worse than HSM and ISM at equal memory (Fig. 6)",
                 "paper": "claimed", "ours": "holds for every t computed"
                 if cr.msm_never_worse.all() else "violated",
                 "verdict": verdict(bool(cr.msm_never_worse.all())), "kind": "theory"})
    # -- Fig. 7 -------------------------------------------------------------------------------
    f7 = pd.read_csv(th["fig7_chen"])
    mem_ok = bool((f7.memory_ratio.dropna() <= 1 + 1e-12).all()) and f7.memory_ratio.notna().all()
    cost_ok = bool((f7.msm_cost_per_step_at_chen_memory <= f7.chen_cost_per_step + 1e-12).all())
    fig7_lines = []
    for beta, g in f7.groupby("beta"):
        big = g[g.seq_len >= 100]
        fig7_lines.append(
            f"- β = {beta} (α = {int(g.alpha.iloc[0])}): at cost {g.target_cost_per_step.iloc[0]:g}"
            f"/step MSM needs {fmt(big.memory_ratio.min(), 2)}–{fmt(big.memory_ratio.max(), 2)}"
            f" of Chen's memory for t ≥ 100; at Chen's memory its cost per step is "
            f"{fmt(big.msm_cost_per_step_at_chen_memory.min(), 3)}–"
            f"{fmt(big.msm_cost_per_step_at_chen_memory.max(), 3)} against Chen's "
            f"{fmt(big.chen_cost_per_step.min(), 3)}–{fmt(big.chen_cost_per_step.max(), 3)}.")
    rows.append({"claim": "Fig. 7: MSM beats Chen's √t: less memory at cost 2/step, and lower cost "
                          "at memory √t(1+β)",
                 "paper": "claimed (curves)",
                 "ours": f"memory ratio ≤ 1: {'yes' if mem_ok else 'no'}; cost ≤ Chen: "
                         f"{'yes' if cost_ok else 'no'} (every t, every β)",
                 "verdict": verdict(mem_ok and cost_ok), "kind": "theory"})
    # -- bounds -------------------------------------------------------------------------------
    bc = pd.read_csv(th["bounds_claims"], keep_default_na=False)
    for r in bc.itertuples():
        detail = r.detail
        label = "HSM closed form (PAPER.md §2)" if r.claim == "closed form equals DP" else "Bound"
        rows.append({"claim": f"{label}: {r.claim}", "paper": "claimed",
                     "ours": (detail or "every cell") + f" ({r.scope})",
                     "verdict": verdict(str(r.holds) == "True", "holds", "fails"),
                     "kind": "theory"})

    # -- measured -----------------------------------------------------------------------------
    measured_md = "*The measured part is disabled in this configuration.*"
    mcsv = find(inputs, "measured.csv")
    if mcsv:
        measured_md, mrows = measured_section(smk, pub, mcsv, inputs)
        rows += mrows

    summary = pd.DataFrame(rows)[["kind", "claim", "paper", "ours", "verdict"]]
    summary.columns = ["", "claim", "paper", "ours", "verdict"]

    # -- provenance ---------------------------------------------------------------------------
    metas = [json.loads(Path(p).read_text()) for p in smk.input.theory_meta]
    m0 = metas[0] if metas else {}
    prov = [f"- Configuration: `{smk.params.config.get('name', '?')}` "
            f"(output directory `{smk.params.outdir}`).",
            f"- Theory machine: {m0.get('machine', '?')} (host `{m0.get('hostname', '?')}`), "
            f"Python {m0.get('python_version', '?')}, numpy {m0.get('numpy_version', '?')}.",
            f"- Commit `{m0.get('git_commit', '?')}`"
            f"{' (with uncommitted changes)' if m0.get('git_dirty') else ''}.",
            "- Every theory CSV has a `.meta.json` beside it (rule, parameters, inputs, "
            "versions, machine, time); every measured row carries its own provenance columns "
            "(docs/results-schema.md). Per-job run times: `results/benchmarks/`."]
    cfgname = smk.params.config.get("name", "default")
    rerun = ("snakemake all --cores 2" if cfgname == "default" else
             f"snakemake all --cores 2 --configfile experiments/config/{cfgname}.yaml")
    tpl = Template(Path(smk.input.template).read_text(encoding="utf-8"))
    text = tpl.substitute(
        config_name=cfgname,
        machine=m0.get("machine", "?"),
        version=m0.get("membptt_version", "?"),
        commit=m0.get("git_commit", "?"),
        summary=table_markdown(summary).strip(),
        table_cost_per_step=cps_md,
        table_paper_values=read_table_md(inputs, "paper_values"),
        fig3="\n".join(fig3_lines),
        table_crossovers=read_table_md(inputs, "crossovers"),
        fig7="\n".join(fig7_lines),
        table_bounds=read_table_md(inputs, "bounds"),
        measured=measured_md,
        provenance="\n".join(prov),
        rerun=rerun + "        # everything\npytest tests/test_pipeline*.py   # the pipeline's "
                      "tests (tiny config, seconds)",
    )
    atomic_write_text(smk.output.report, text)


def measured_section(smk, pub, mcsv, inputs):
    df = pd.read_csv(mcsv, dtype={"budget_requested": str})
    cfg = smk.params.config["measured"]
    T = int(cfg.get("tradeoff", {}).get("seq_len", 1000))
    ok = df[df.status == "ok"]
    rows, md = [], []
    w = ok.iloc[0] if len(ok) else None
    if w is not None:
        md.append(f"Workload: LSTM cell {w.input_size}→{w.hidden}, head to {w.classes} classes, "
                  f"batch {w.batch}, {w['dtype']}, device `{w.device}` ({w.device_model}), "
                  f"{int(w.threads)} torch thread(s), torch {w.torch_version}; "
                  f"{int(w.repeats)} timed iterations after {int(w.warmup)} warm-up, "
                  f"median reported. {len(df)} rows, {int((df.status == 'ok').sum())} ok"
                  + (f", {int((df.status != 'ok').sum())} not ok: "
                     + ", ".join(f"{r.point} ({r.status})" for r in df[df.status != 'ok'].itertuples())
                     if (df.status != "ok").any() else "") + ".")
    # how much of a core the bench jobs got: Snakemake's benchmark files (cpu_time / wall)
    shares = []
    for b in smk.input.benchmarks:
        bt = pd.read_csv(b, sep="\t")
        if len(bt) and float(bt.s.iloc[-1]) > 0:
            shares.append(float(bt.cpu_time.iloc[-1]) / float(bt.s.iloc[-1]))
    share = float(pd.Series(shares).median()) if shares else float("nan")
    # Measured points are scheduled one at a time (each reserves all of Snakemake's cores), so
    # the pipeline never times two points side by side. Outside load cannot be seen from here;
    # the CPU share below (which misses the RSS pass's child process) is information only.
    contended = False
    md.append(f"**Timing reliability.** Measured points ran one at a time, each reserving all "
              f"of Snakemake's cores; median CPU time / wall time of the bench jobs "
              f"{share:.2f} (the RSS pass runs in a child process that this figure does not "
              "count). Timings assume the machine was otherwise idle; the interquartile "
              "ranges in `results/measured.csv` show the run-to-run noise.")
    at = ok[ok.seq_len == T]
    full = at[at.method == "full"]
    hl = pub["headline"]
    if len(full):
        f = full.iloc[0]
        best = None
        for method in ("ism", "msm", "msm-measured", "hsm"):
            g = at[(at.method == method) & (at.budget_requested == "5%")]
            if len(g):
                best = g.iloc[0]
                break
        if best is not None:
            tr = best.time_median_s / f.time_median_s
            mr = best.peak_bytes / f.peak_bytes
            pred = (best.forward_ops + 2 * T) / (3 * T)
            mem_ok = mr <= 0.10  # 5 % of the states plus the plan-independent working set
            # the claim is "about one third more time": allow 10 % for timing noise
            time_ok = tr <= 1.10 * hl["time_ratio"]
            rows.append({"claim": f"Headline, measured: {best.method} at a 5% budget, T = {T}",
                         "paper": f"memory ×{1 - hl['memory_saved_fraction']:.2f}, "
                                  f"time ×{hl['time_ratio']}",
                         "ours": f"measured peak ×{mr:.3f} of full, time ×{tr:.2f} of full "
                                 f"(unit-cost model predicts ×{pred:.3f})",
                         "verdict": ("memory " + verdict(mem_ok) + "; time "
                                     + ("**inconclusive** (contended CPU)" if contended
                                        else verdict(time_ok))),
                         "kind": "measured"})
    # Fig. 2b: measured time ratio vs the unit model (C + 2T)/(3T)
    f2 = cfg.get("fig2b", {})
    fulls = ok[ok.method == "full"].set_index("seq_len")
    lines = []
    ratios = []
    for r in ok[(ok.method == "hsm") & ok.seq_len.isin(f2.get("lengths", []))
                & ok.budget_requested.isin([str(b) for b in f2.get("budgets", [])])].itertuples():
        if r.seq_len in fulls.index:
            meas = r.time_median_s / fulls.loc[r.seq_len].time_median_s
            pred = (r.forward_ops + 2 * r.seq_len) / (3 * r.seq_len)
            ratios.append((r.seq_len, int(r.budget_requested), meas, pred))
    if ratios:
        rdf = pd.DataFrame(ratios, columns=["T", "m", "measured", "model"])
        lines.append("| T | m | HSM time / full time, measured | unit-cost model (C+2T)/3T |")
        lines.append("|---|---|---|---|")
        for r in rdf.sort_values(["m", "T"]).itertuples():
            lines.append(f"| {r.T} | {r.m} | {r.measured:.2f} | {r.model:.2f} |")
        corr = rdf[["measured", "model"]].corr().iloc[0, 1] if len(rdf) > 2 else float("nan")
        mono = all((g.sort_values("T").measured.diff().dropna() >= -0.05).all()
                   for _, g in rdf.groupby("m"))
        rows.append({"claim": "Fig. 2b: time per iteration follows the cost per step of Fig. 2a",
                     "paper": "measured curves (hardware unknown)",
                     "ours": f"measured/modelled time ratios correlate {corr:.2f}; "
                             f"{'non-decreasing' if mono else 'not monotone'} in T per budget",
                     "verdict": "**inconclusive** (contended CPU)" if contended else
                     verdict(corr > 0.8, "reproduced (qualitatively)", "differs"),
                     "kind": "measured"})
    md.append("### Fig. 2b: time per iteration against length\n\n"
              "![Fig. 2b](../figures/fig2b_time.png)\n\n" + "\n".join(lines))
    md.append(f"### Memory–time trade-off at T = {T}\n\n"
              "![trade-off](../figures/tradeoff_memory_time.png)\n\n"
              + read_table_md(inputs, "measured_points"))
    # equal memory
    eq_md = read_table_md(inputs, "equal_memory")
    ck = at[at.method == "torch-checkpoint"]
    mm = at[at.method == "msm-measured"]
    if len(ck) and len(mm):
        c = ck.iloc[0]
        fit = mm[mm.peak_bytes <= c.peak_bytes]
        if len(fit):
            b = fit.sort_values("time_median_s").iloc[0]
            faster = b.time_median_s < c.time_median_s
            rows.append({"claim": "(ours) msm on measured costs is faster than "
                                  "torch.utils.checkpoint at equal or lower peak memory",
                         "paper": "—",
                         "ours": f"{b.time_median_s:.3f} s at {b.peak_bytes / 2**20:.2f} MiB vs "
                                 f"{c.time_median_s:.3f} s at {c.peak_bytes / 2**20:.2f} MiB",
                         "verdict": ("**inconclusive** (contended CPU; measured: "
                                     f"{'yes' if faster else 'no'})") if contended
                         else verdict(bool(faster), "yes", "no"), "kind": "measured"})
        else:
            rows.append({"claim": "(ours) msm on measured costs vs torch.utils.checkpoint at "
                                  "equal memory", "paper": "—",
                         "ours": "no msm-measured point at or below torch-checkpoint's peak",
                         "verdict": "**not measured**", "kind": "measured"})
    md.append("### Methods at equal memory\n\n" + eq_md)
    # predicted vs measured
    pl = ok[ok.predicted_peak_bytes.notna() & ok.peak_bytes.notna()]
    if len(pl):
        over = (pl.peak_bytes - pl.predicted_peak_bytes) / 2**20
        tr = (pl.time_median_s / pl.predicted_time_s).dropna()
        md.append("### Predicted against measured\n\n"
                  "![predicted vs measured](../figures/predicted_vs_measured.png)\n\n"
                  f"Over {len(pl)} plan points, measured peak minus predicted stored states: "
                  f"{over.min():.2f}–{over.max():.2f} MiB (the working set: gradients, the "
                  "working core, backward temporaries; docs/results-schema.md). Measured time / "
                  f"predicted time: median {tr.median():.2f} (range {tr.min():.2f}–"
                  f"{tr.max():.2f}).")
        ge = ok.grad_error.dropna()
        rows.append({"claim": "(ours) every exact method's gradients equal standard BPTT's",
                     "paper": "exact by construction",
                     "ours": f"max relative error {ge.max():.1e} over {len(ge)} rows",
                     "verdict": verdict(bool((ge < 1e-4).all()), "yes", "no"),
                     "kind": "measured"})
    return "\n\n".join(md), rows


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
