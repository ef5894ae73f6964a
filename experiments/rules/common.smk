# Paths and target lists shared by every rule file.
import os
import sys

OUTDIR = config.get("outdir", ".")
PUBLISHED = os.path.join(workflow.basedir, "paper", "published.json")
REPORT_TEMPLATE = os.path.join(workflow.basedir, "paper", "report_template.md")
# the membptt console script of the interpreter running Snakemake (the project's venv)
MEMBPTT = os.path.join(os.path.dirname(sys.executable), "membptt")
if not os.path.exists(MEMBPTT):
    MEMBPTT = "membptt"

THEORY = config["theory"]
MEASURED = config["measured"]
WORKLOAD = MEASURED.get("workload", {})
# A measured point reserves every core Snakemake was given, so that timed points never run
# beside another job of the pipeline (timings compared across points stay fair); the torch
# thread count of the point itself is `workload.threads`. The Slurm profile sets it back to the
# workload's threads (each point gets its own allocation there).
BENCH_THREADS = max(int(WORKLOAD.get("threads", 1)), int(workflow.cores or 1))
FIG_EXT = ["png", "pdf"]


def out(*parts):
    """A path under the configured output directory (normalised: "." gives results/...)."""
    return os.path.normpath(os.path.join(OUTDIR, *parts))


def figure(name):
    return [out("figures", f"{name}.{ext}") for ext in FIG_EXT]


def table(name):
    return [out("results", "tables", f"{name}.{ext}") for ext in ("md", "tex")]


def meta(csv):
    return csv[: -len(".csv")] + ".meta.json"


wildcard_constraints:
    strategy="hsm|ism|msm",
    method="[a-z][a-z-]*[a-z]",
    T=r"\d+",
    budget=r"none|ckpt|u\d+|\d+(p\d+)?pct",
    ext="png|pdf",


# -- theory targets ----------------------------------------------------------------------

THEORY_CSVS = {
    "curves_hsm": out("results/theory/curves_hsm.csv"),
    "curves_ism": out("results/theory/curves_ism.csv"),
    "curves_msm": out("results/theory/curves_msm.csv"),
    "fig3_ops": out("results/theory/fig3_ops.csv"),
    "fig3_summary": out("results/theory/fig3_summary.csv"),
    "fig6_curves": out("results/theory/fig6_curves.csv"),
    "fig6_crossovers": out("results/theory/fig6_crossovers.csv"),
    "fig7_chen": out("results/theory/fig7_chen.csv"),
    "bounds": out("results/theory/bounds.csv"),
    "bounds_claims": out("results/theory/bounds_claims.csv"),
    "paper_values": out("results/theory/paper_values.csv"),
}
THEORY_FIGURES = ["fig2a_hsm", "fig5a_ism", "fig5b_msm", "fig3_policies", "fig6_hsm_ism_msm",
                  "fig7_chen", "bounds_hsm"]
THEORY_TABLES = ["cost_per_step", "paper_values", "crossovers", "bounds"]


def theory_outputs():
    files = list(THEORY_CSVS.values()) + [meta(c) for c in THEORY_CSVS.values()]
    for name in THEORY_FIGURES:
        files += figure(name)
    for name in THEORY_TABLES:
        files += table(name)
    return files


# -- measured targets --------------------------------------------------------------------
# Measured sweeps: one `membptt bench` process per point, one CSV per point under
# results/points/ (written atomically by membptt, so an interrupted sweep leaves whole files or
# nothing), then aggregated into results/measured.csv. Point file names:
#   results/points/{method}__T{T}__{budget}.csv
# budget: "none" (methods without a budget), "u<n>" (n hidden-state units), "<x>pct" (x % of
# the full-cache memory; "2p5pct" is 2.5 %), "ckpt" (torch-checkpoint's measured peak at the
# same T, less the plan's working set: the equal-memory comparison).

BUDGET_FREE = {"full", "full-fused", "torch-checkpoint"}
DEVICE = WORKLOAD.get("device", "cpu")
BENCH_ARGS = [
    "--hidden", str(WORKLOAD.get("hidden", 256)),
    "--input-size", str(WORKLOAD.get("input_size", 256)),
    "--classes", str(WORKLOAD.get("classes", 256)),
    "--batch", str(WORKLOAD.get("batch", 64)),
    "--dtype", WORKLOAD.get("dtype", "float32"),
    "--device", DEVICE,
    "--seed", str(WORKLOAD.get("seed", 0)),
    "--repeats", str(WORKLOAD.get("repeats", 5)),
    "--warmup", str(WORKLOAD.get("warmup", 1)),
    "--threads", str(WORKLOAD.get("threads", 1)),
    "--quiet",
]
if not WORKLOAD.get("grad_check", True):
    BENCH_ARGS.append("--no-grad-check")
if not WORKLOAD.get("rss", True):
    BENCH_ARGS.append("--no-rss")


def budget_token(budget):
    """Config budget ("5%", "250", 250) -> file-name token ("5pct", "u250")."""
    b = str(budget).strip()
    if b.endswith("%"):
        return b[:-1].replace(".", "p") + "pct"
    return f"u{int(b)}"


def budget_arg(token):
    """File-name token -> `--memory` value ("5pct" -> "5%", "u250" -> "250")."""
    if token == "none":
        return None
    if token.endswith("pct"):
        return token[: -len("pct")].replace("p", ".") + "%"
    return token[1:]


def point(method, T, budget):
    return out(f"results/points/{method}__T{T}__{budget}.csv")


def measured_points():
    if not MEASURED.get("enabled", False):
        return []
    pts = []
    f2 = MEASURED.get("fig2b", {})
    for T in f2.get("lengths", []):
        for m in f2.get("baselines", []):
            pts.append(point(m, T, "none" if m in BUDGET_FREE else "u1000000"))
        for b in f2.get("budgets", []):
            pts.append(point("hsm", T, budget_token(b)))
    tr = MEASURED.get("tradeoff", {})
    if tr:
        T = tr.get("seq_len", 1000)
        for m in tr.get("fixed_methods", []):
            pts.append(point(m, T, "none"))
        for m in tr.get("plan_methods", []):
            for b in tr.get("budgets", []):
                pts.append(point(m, T, budget_token(b)))
        for m in tr.get("equal_memory", []):
            pts.append(point(m, T, "ckpt"))
    return list(dict.fromkeys(pts))  # unique, in order


def measured_benchmarks():
    """Snakemake's benchmark file of every measured point (CPU time vs wall time)."""
    return [out("results/benchmarks/bench", os.path.basename(p)[: -len(".csv")] + ".tsv")
            for p in measured_points()]


MEASURED_FIGURES = ["fig2b_time", "tradeoff_memory_time", "predicted_vs_measured"]
MEASURED_TABLES = ["equal_memory", "measured_points"]


def measured_outputs():
    if not MEASURED.get("enabled", False):
        return []
    files = [out("results/measured.csv")]
    for name in MEASURED_FIGURES:
        files += figure(name)
    for name in MEASURED_TABLES:
        files += table(name)
    return files


def equal_memory_inputs(wildcards):
    tr = MEASURED.get("tradeoff", {})
    ref_method = tr.get("plan_methods", ["msm"])[0]
    ref_budget = budget_token(tr.get("budgets", ["5%"])[0])
    return {"ckpt": point("torch-checkpoint", wildcards.T, "none"),
            "sizes": point(ref_method, wildcards.T, ref_budget)}


# -- report ------------------------------------------------------------------------------


def report_outputs():
    return [out("paper/REPORT.md")]

