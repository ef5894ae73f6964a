"""End-to-end tests of the Snakemake pipeline on a tiny configuration (theory and measured).

One pipeline run (module fixture) into a temporary directory, then checks: CSV schemas, the
theory numbers against paper/published.json, every figure (PNG and PDF) and table (Markdown and
LaTeX) written, the report regenerated, a rerun after losing one point recomputes only that
point and what depends on it, and a typo in the config is an error naming the key.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
PUBLISHED = json.loads((ROOT / "paper" / "published.json").read_text())

pytestmark = pytest.mark.skipif(not SNAKEMAKE.exists() or shutil.which("git") is None,
                                reason="needs snakemake in the test interpreter's environment")

TINY = {
    "name": "tiny",
    "outdir": ".",
    "theory": {
        "lengths": {"min": 10, "max": 320, "points": 12},
        "budgets": [10, 50],
        "alpha": 5,
        "msm_max_len": 200,
        "fig3": {"memory": 4, "lengths": [4, 10]},
        "fig6": {"budgets_internal": [10], "max_len": 400},
        "fig7": {"betas": [2], "lengths": {"min": 4, "max": 100, "points": 6}},
        "bounds": {"memories": [1, 2, 5], "max_len": 200, "claim_max_len": 500,
                   "claim_max_memory": 10},
    },
    "measured": {
        "enabled": True,
        "workload": {"hidden": 8, "input_size": 8, "classes": 8, "batch": 2, "repeats": 1,
                     "warmup": 0, "threads": 1, "rss": False},
        "fig2b": {"lengths": [8], "budgets": [3], "baselines": ["full"]},
        "tradeoff": {"seq_len": 8, "fixed_methods": ["full", "full-fused"],
                     "checkpoint_methods": ["torch-checkpoint-fused",
                                            "torch-checkpoint-reentrant"],
                     "segments": [2], "plan_methods": ["msm"], "budgets": ["100%"],
                     "equal_memory": ["msm"]},
        "reversible": {"enabled": True, "models": ["rev-gru"], "seq_len": 12, "hidden": 8,
                       "input_size": 5, "classes": 4, "batch": 8, "equal_memory": ["msm"],
                       "msm_budgets": ["50%"]},
    },
    "lm_parity": {"in_all": True, "steps": 2, "seq_len": 8, "batch": 2, "embed": 4, "hidden": 8,
                  "eval_every": 1, "eval_streams": 2, "eval_len": 8},
}

THEORY_COLUMNS = {
    "curves_hsm": {"strategy", "budget", "memory_units", "seq_len", "forward_ops",
                   "cost_per_step", "time_ratio"},
    "fig3_ops": {"seq_len", "memory", "index", "op", "kind", "step", "keep"},
    "fig3_summary": {"seq_len", "memory", "forward_ops", "backward_ops", "peak_memory",
                     "dp_cost", "trace"},
    "fig6_curves": {"strategy", "alpha", "budget_internal", "memory_units", "seq_len",
                    "forward_ops", "cost_per_step"},
    "fig6_crossovers": {"alpha", "budget_internal", "memory_units", "hsm_first_cheaper_at",
                        "msm_never_worse"},
    "fig7_chen": {"beta", "alpha", "seq_len", "chen_memory", "chen_cost_per_step",
                  "msm_memory_at_target", "memory_ratio", "msm_cost_per_step_at_chen_memory"},
    "bounds": {"memory", "seq_len", "forward_ops", "ratio", "holds_upper", "holds_numeric"},
    "bounds_claims": {"claim", "scope", "method", "value", "holds", "detail"},
    "paper_values": {"group", "strategy", "seq_len", "memory", "quantity", "ours",
                     "published", "match"},
}
# the columns the pipeline reads from `membptt bench` rows (docs/results-schema.md)
MEASURED_COLUMNS = {"group", "group_baseline", "label", "method", "model", "seq_len", "hidden",
                    "batch", "budget_requested", "budget_units", "forward_ops", "backward_ops",
                    "predicted_peak_bytes", "predicted_time_s", "time_median_s", "time_q1_s",
                    "time_q3_s", "time_iqr_s", "time_samples_s", "ratio_median", "ratio_q1",
                    "ratio_q3", "ratio_samples", "peak_bytes", "grad_bytes", "grad_error",
                    "status", "message", "device", "threads", "torch_version", "git_commit",
                    "hostname", "timestamp", "command"}
sys.path.insert(0, str(ROOT / "experiments"))
from targets import (  # noqa: E402  (the one list of figures and tables)
    LM_FIGURES,
    MEASURED_FIGURES,
    MEASURED_TABLES,
    REVERSIBLE_FIGURES,
    THEORY_FIGURES,
    THEORY_TABLES,
)

FIGURES = [*THEORY_FIGURES, *MEASURED_FIGURES, *REVERSIBLE_FIGURES, *LM_FIGURES]
TABLES = [*THEORY_TABLES, *MEASURED_TABLES]
GROUPS = {"fig2b_T8": ["full", "hsm:memory=3"],
          "tradeoff_T8": ["full", "full-fused", "torch-checkpoint-fused",
                          "torch-checkpoint-fused:segments=2", "torch-checkpoint-reentrant",
                          "torch-checkpoint-reentrant:segments=2", "msm:memory=100%",
                          "msm:memory=peak(torch-checkpoint-fused)"]}


def snakemake(workdir: Path, *args, config: Path, check=True, timeout=300):
    cmd = [str(SNAKEMAKE), *args, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n"
                             f"{res.stderr[-5000:]}")
    return res


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    config = work / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    snakemake(work, "all", "--cores", "2", config=config, timeout=900)
    return work, config


def test_theory_csvs_have_their_schema(run):
    work, _ = run
    for name, cols in THEORY_COLUMNS.items():
        path = work / "results" / "theory" / f"{name}.csv"
        df = pd.read_csv(path)
        assert len(df) > 0, name
        assert cols <= set(df.columns), (name, cols - set(df.columns))
        meta = json.loads(path.with_suffix(".meta.json").read_text())
        assert {"git_commit", "hostname", "machine", "timestamp", "rule", "params"} <= set(meta)


def test_theory_numbers_equal_the_papers(run):
    work, _ = run
    pv = pd.read_csv(work / "results" / "theory" / "paper_values.csv")
    assert pv["match"].all(), pv[~pv["match"]]
    small = pv[pv.group == "small_hsm"]
    assert len(small) == sum(len(r) for r in PUBLISHED["small_tables"]["hsm"]["rows"])
    f3 = pd.read_csv(work / "results" / "theory" / "fig3_summary.csv").set_index("seq_len")
    assert f3.loc[10, "trace"] == PUBLISHED["fig3"]["trace_t10_m4"]
    assert f3.loc[10, "forward_ops"] == PUBLISHED["fig3"]["t10_cost"]
    cross = pd.read_csv(work / "results" / "theory" / "fig6_crossovers.csv")
    assert int(cross.hsm_first_cheaper_at.iloc[0]) == PUBLISHED["fig6"]["hsm_overtakes_ism_at"][0]
    hsm = pd.read_csv(work / "results" / "theory" / "curves_hsm.csv")
    pub = PUBLISHED["cost_per_step"]
    for b in (10, 50):
        for t, v in zip(pub["lengths"], pub["hsm"][str(b)]):
            row = hsm[(hsm.strategy == "hsm") & (hsm.budget == b) & (hsm.seq_len == t)]
            if len(row):
                assert abs(float(row.cost_per_step.iloc[0]) - v) <= 5e-4 + 1e-9, (b, t)


def test_measured_groups_and_aggregate(run):
    work, _ = run
    df = pd.read_csv(work / "results" / "measured.csv", dtype={"label": str})
    assert MEASURED_COLUMNS <= set(df.columns), MEASURED_COLUMNS - set(df.columns)
    for group, labels in GROUPS.items():
        g = pd.read_csv(work / "results" / "groups" / f"{group}.csv")
        assert sorted(g.label) == sorted(labels), group
        # one process: one host, one time, one group id; the baseline's ratio is exactly 1
        assert g.group.nunique() == g.hostname.nunique() == g.timestamp.nunique() == 1
        assert set(g.group) == {group} and set(g.group_baseline) == {"full"}
        assert (g[g.label == "full"].ratio_median == 1.0).all()
        assert (work / "results" / "benchmarks" / "bench" / f"{group}.tsv").exists()
    assert sorted(df.label) == sorted(lab for labels in GROUPS.values() for lab in labels)
    assert (df.status == "ok").all(), df[["group", "label", "status", "message"]]
    assert (df.peak_bytes > 0).all()
    assert (df.grad_error.fillna(0) < 1e-4).all()
    # every ratio is the quotient of two times of the same round in the same group
    for r in df.itertuples():
        base = df[(df.group == r.group) & (df.label == r.group_baseline)].iloc[0]
        ts = [float(x) for x in str(r.time_samples_s).split()]
        bs = [float(x) for x in str(base.time_samples_s).split()]
        rs = [float(x) for x in str(r.ratio_samples).split()]
        assert rs == pytest.approx([a / b for a, b in zip(ts, bs)], rel=1e-4)


def test_every_figure_and_table_is_written(run):
    work, _ = run
    for name in FIGURES:
        png = (work / "figures" / f"{name}.png").read_bytes()
        pdf = (work / "figures" / f"{name}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
        assert pdf.startswith(b"%PDF") and len(pdf) > 2000, name
    for name in TABLES:
        md = (work / "results" / "tables" / f"{name}.md").read_text()
        tex = (work / "results" / "tables" / f"{name}.tex").read_text()
        assert md.count("|") > 4, name
        assert r"\begin{tabular}" in tex and r"\end{table}" in tex, name


def test_report_is_regenerated_with_verdicts(run):
    work, _ = run
    text = (work / "paper" / "REPORT.md").read_text()
    assert "${" not in text and "$summary" not in text
    assert "Configuration **tiny**" in text
    # every theory claim of the summary has a verdict, and each is the one its data gives:
    # the tiny config computes every tabulated value it covers exactly
    summary = [ln for ln in text.splitlines() if ln.startswith("| theory |")]
    assert len(summary) >= 8, summary
    for ln in summary:
        assert ln.rstrip(" |").endswith(("**reproduced**", "**holds**")), ln
    measured = [ln for ln in text.splitlines() if ln.startswith("| measured |")]
    assert any("gradients equal" in ln and "**yes**" in ln for ln in measured), measured
    assert "WARNING" not in text  # one host: no mixed-runs warning
    for fig in ("fig2a_hsm", "fig6_hsm_ism_msm", "fig2b_time"):
        assert f"../figures/{fig}.png" in text


def test_reversible_group_and_lm_parity(run):
    """The reversible group (its own CSV, not aggregated) and the LM run, in the report."""
    work, _ = run
    g = pd.read_csv(work / "results" / "groups" / "reversible_rev_gru_T12.csv")
    assert list(g.label) == ["full", "reversible", "msm:memory=peak(reversible)",
                             "msm:memory=50%"]
    ok = g[g.status == "ok"].set_index("label")
    assert {"full", "reversible", "msm:memory=50%"} <= set(ok.index), g[["label", "message"]]
    assert (ok.grad_error < 1e-4).all() and (ok.group_baseline == "full").all()
    rev = ok.loc["reversible"]
    assert rev.state_units == 8 and 0 < rev.buffer_bits_stored <= rev.buffer_bits_allocated
    assert "reversible" not in set(pd.read_csv(work / "results" / "measured.csv").method)
    lm = pd.read_csv(work / "results" / "lm_parity.csv")
    assert set(lm.model) == {"gru", "rev-gru", "lstm", "rev-lstm"} and lm.step.max() == 2
    text = (work / "paper" / "REPORT.md").read_text()
    published = PUBLISHED["reversible_rnn"]["activation_memory_reduction"]
    assert f"reduce activation memory {published[0]}–{published[1]}×" in text
    assert "reach comparable performance" in text
    assert "../figures/reversible_memory_time.png" in text and "**rev-gru**" in text


def test_rerun_recomputes_only_what_is_missing(run):
    """An interrupted run: one group and everything downstream of the groups missing.
    A rerun must redo that group and the aggregation, and nothing else upstream."""
    work, config = run
    res = snakemake(work, "all", "-n", config=config)
    assert "Nothing to be done" in res.stdout + res.stderr
    victim = work / "results" / "groups" / "fig2b_T8.csv"
    aggregate = work / "results" / "measured.csv"
    saved = {p: (p.read_bytes(), p.stat()) for p in (victim, aggregate)}
    for p in saved:
        p.unlink()
    try:
        res = snakemake(work, "all", "-n", config=config)
        out = res.stdout + res.stderr
        jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
        assert jobs.get("bench_group") == "1", out
        assert jobs.get("aggregate_measured") == "1", out
        assert not any(k.startswith("theory_") for k in jobs), jobs
        assert re.findall(r"output: results/groups/(\w+)\.csv", out) == ["fig2b_T8"], out
    finally:
        for p, (data, st) in saved.items():  # put them back as they were
            p.write_bytes(data)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    res = snakemake(work, "all", "-n", config=config)
    assert "Nothing to be done" in res.stdout + res.stderr


def test_config_typo_is_an_error_naming_the_key(run, tmp_path):
    bad = json.loads(json.dumps(TINY))
    bad["theory"]["lenghts"] = bad["theory"].pop("lengths")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(bad))
    res = snakemake(tmp_path, "all", "-n", config=config, check=False)
    assert res.returncode != 0
    assert "lenghts" in res.stdout + res.stderr


def test_compare_runs_accepts_identical_runs(run):
    work, _ = run
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / "slurm" /
                                              "compare_runs.py"), str(work), str(work)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "RESULT: equal" in res.stdout


def test_compare_runs_lm_parity_timings_ignored_losses_compared(tmp_path):
    """lm_parity.csv: wall-clock and machine columns may differ between runs, losses may not."""
    row = {"model": "gru", "step": 25, "eval_loss_nats": 2.93, "elapsed_s": 2.1,
           "total_wall_s": 199.2, "machine": "a", "hostname": "a", "command": "python a"}
    for run, changes in (("a", {}), ("b", {"elapsed_s": 4.1, "total_wall_s": 224.7,
                                          "machine": "b", "hostname": "b", "command": "python b"}),
                         ("c", {"eval_loss_nats": 2.94})):
        (tmp_path / run / "results").mkdir(parents=True)
        pd.DataFrame([{**row, **changes}]).to_csv(tmp_path / run / "results" / "lm_parity.csv",
                                                  index=False)
    script = str(ROOT / "experiments" / "slurm" / "compare_runs.py")
    same = subprocess.run([sys.executable, script, str(tmp_path / "a"), str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=60)
    assert same.returncode == 0 and "RESULT: equal" in same.stdout, same.stdout + same.stderr
    other = subprocess.run([sys.executable, script, str(tmp_path / "a"), str(tmp_path / "c")],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 1, other.stdout + other.stderr
    assert "eval_loss_nats" in other.stdout
