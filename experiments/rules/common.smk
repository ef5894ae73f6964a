# Paths and target lists shared by every rule file.
import csv
import os
import re
import sys

OUTDIR = config["outdir"]
PUBLISHED = os.path.join(workflow.basedir, "paper", "published.json")
REPORT_TEMPLATE = os.path.join(workflow.basedir, "paper", "report_template.md")
# the membptt console script of the interpreter running Snakemake (the project's venv)
MEMBPTT = os.path.join(os.path.dirname(sys.executable), "membptt")
if not os.path.exists(MEMBPTT):
    MEMBPTT = "membptt"

THEORY = config["theory"]
MEASURED = config["measured"]
WORKLOAD = MEASURED["workload"]


def check_config(cfg):
    """What JSON Schema cannot say (relations between keys): a clear error naming the key."""
    th = cfg["theory"]
    grids = {"theory.lengths": th["lengths"]}
    if "fig7" in th:
        grids["theory.fig7.lengths"] = th["fig7"]["lengths"]
    for key, g in grids.items():
        if g["min"] >= g["max"]:
            raise ValueError(f"config {key}: min ({g['min']}) must be below max ({g['max']})")
    tr = cfg["measured"]["tradeoff"]
    if cfg["measured"]["enabled"]:
        too_long = [k for k in tr["segments"] if k > tr["seq_len"]]
        if too_long:
            raise ValueError(f"config measured.tradeoff.segments: {too_long} exceed seq_len "
                             f"{tr['seq_len']} (a segment needs at least one step)")


check_config(config)
# A comparison group (one measured job) asks for every core Snakemake was given, so that no
# other job of the pipeline runs beside it: Snakemake scales a rule's threads down to --cores
# when it runs locally (no need to read workflow.cores, which --unlock, dry runs and cluster
# executors leave unset); the Slurm profile sets them to 1 per job (each group is its own
# allocation there). The torch thread count of the group is `workload.threads`. Ratios inside
# a group are fair even under outside load (interleaved rounds); absolute times are not.
ALL_CORES = 1024
# figures and tables are listed once, in experiments/targets.py (rules, report and tests)
sys.path.insert(0, os.path.join(workflow.basedir, "experiments"))
from targets import (  # noqa: E402
    FIG_EXT,
    LM_FIGURES,
    MEASURED_FIGURES,
    MEASURED_TABLES,
    REVERSIBLE_FIGURES,
    THEORY_FIGURES,
    THEORY_TABLES,
    bench_args,
    bench_command,
    measured_groups,
    reversible_groups,
)


def out(*parts):
    """A path under the configured output directory (normalised: "." gives results/...)."""
    return os.path.normpath(os.path.join(OUTDIR, *parts))


def figure(name):
    return [out("figures", f"{name}.{ext}") for ext in FIG_EXT]


def table(name):
    return [out("results", "tables", f"{name}.{ext}") for ext in ("md", "tex")]


def meta(csv):
    return f"{csv.removesuffix('.csv')}.meta.json"


wildcard_constraints:
    strategy="hsm|ism|msm",
    group=r"[A-Za-z0-9_]+",
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


# the cost-per-step comparison as data (ours, published, tolerance, match): the report counts it
COST_PER_STEP_CHECKS = out("results/tables/cost_per_step.csv")


def theory_outputs():
    files = list(THEORY_CSVS.values()) + [meta(c) for c in THEORY_CSVS.values()]
    files.append(COST_PER_STEP_CHECKS)
    for name in THEORY_FIGURES:
        files += figure(name)
    for name in THEORY_TABLES:
        files += table(name)
    return files


# -- measured targets --------------------------------------------------------------------
# One comparison group per job: `membptt bench` measures the group's methods in one process,
# timed interleaved round by round, and writes one row per method with the per-round time
# ratio to the group's baseline (results/groups/<group>.csv, written atomically). Every ratio
# of the report, the figures and the tables is computed inside one group. The groups
# (fig2b_T<T>, tradeoff_T<T>, reversible_<model>_T<T>) are built in experiments/targets.py,
# which the GPU run (experiments/gpu/run_groups.py) reads too.
# A group depends only on the config (its methods are rule params), never on another file, so
# a fresh clone (every file's mtime = checkout time) has nothing to re-measure.


DEVICE = WORKLOAD["device"]
BENCH_ARGS = bench_args(WORKLOAD)
REV_GROUPS = reversible_groups(MEASURED)
GROUPS = {**measured_groups(MEASURED), **REV_GROUPS}


def group_csvs():
    """The groups aggregated into results/measured.csv (the reversible ones stay apart)."""
    return [out("results", "groups", f"{g}.csv") for g in GROUPS if g not in REV_GROUPS]


def reversible_csvs():
    return [out("results", "groups", f"{g}.csv") for g in REV_GROUPS]


def measured_benchmarks():
    """Snakemake's benchmark file of every group job (CPU time vs wall time)."""
    return [out("results", "benchmarks", "bench", f"{g}.tsv") for g in GROUPS]




def measured_outputs():
    if not MEASURED["enabled"]:
        return []
    files = [out("results/measured.csv")]
    for name in MEASURED_FIGURES:
        files += figure(name)
    for name in MEASURED_TABLES:
        files += table(name)
    if REV_GROUPS:
        files += reversible_csvs()
        for name in REVERSIBLE_FIGURES:
            files += figure(name)
    return files


# -- language-model parity (lm_parity.py): its own target; in `all` only with lm_parity.in_all
LM = config.get("lm_parity", {})
LM_CSV = out("results", "lm_parity.csv")


def lm_outputs():
    files = [LM_CSV]
    for name in LM_FIGURES:
        files += figure(name)
    return files


# the spiking-network comparison group, committed (benchmarks/bench_snn.py, run by hand):
# an input of the report when this checkout has it
SNN_CSV = os.path.join(workflow.basedir, "results", "snn", "snn_cpu.csv")


def snn_csvs():
    return [SNN_CSV] if os.path.exists(SNN_CSV) else []


def lm_in_all():
    return lm_outputs() if LM.get("in_all") else []


# -- report ------------------------------------------------------------------------------


def report_outputs():
    return [out("paper/REPORT.md")]


# -- GPU cards (config `cards`; rules in gpu.smk) -------------------------------------------
# A card's folder holds card.yaml (experiments/gpu/gpurun.py writes it) and the run's groups.

sys.path.insert(0, os.path.join(workflow.basedir, "experiments", "gpu"))
import gpurun  # noqa: E402

CARDS = {name: os.path.normpath(d) for name, d in config.get("cards", {}).items()}


def _card_record(name, folder):
    if not os.path.exists(os.path.join(folder, "card.yaml")):
        raise ValueError(f"config cards.{name}: no card.yaml in {folder!r} (experiments/gpu/"
                         "run.sh writes one beside the run's groups/)")
    return gpurun.load_card(folder)


CARD_RECORDS = {d: _card_record(name, d) for name, d in CARDS.items()}


def card_csvs(d):
    """{group: CSV} of every group the card's run finished (what is committed)."""
    return {g: str(p) for g, p in CARD_RECORDS[d]["csvs"].items()}


def card_main_csvs(d):
    return [p for g, p in card_csvs(d).items() if not g.startswith("reversible_")]


def card_rev_csvs(d):
    return [p for g, p in card_csvs(d).items() if g.startswith("reversible_")]


def card_fig(d, name):
    return [os.path.join(d, "report", "figures", f"{name}.{ext}") for ext in FIG_EXT]


def card_figures(d):
    names = card_csvs(d)
    files = []
    if card_main_csvs(d):
        files += card_fig(d, "predicted_vs_measured")
    if any(g.startswith("fig2b_T") for g in names):
        files += card_fig(d, "fig2b_time")
    if card_tradeoff_T(d) is not None:
        files += card_fig(d, "tradeoff_memory_time")
    if card_rev_csvs(d):
        files += card_fig(d, "reversible_memory_time")
    return files


def card_tradeoff_T(d):
    ts = sorted(int(g.split("_T")[1]) for g in card_csvs(d) if g.startswith("tradeoff_T"))
    return ts[0] if ts else None


def card_fig2b(d):
    """The Fig. 2b lengths the card measured and its HSM budgets (read from the groups)."""
    lengths, budgets = [], set()
    for g, p in card_csvs(d).items():
        if g.startswith("fig2b_T"):
            lengths.append(int(g.split("_T")[1]))
            with open(p, newline="") as f:
                for row in csv.DictReader(f):
                    if row["method"] == "hsm" and row["budget_requested"]:
                        budgets.add(int(row["budget_requested"]))
    return sorted(lengths), sorted(budgets)


def card_inputs(d):
    """The card's own files the report reads: the record, DEVICE.txt, the CUDA test log."""
    rec = CARD_RECORDS[d]
    files = [os.path.join(d, "card.yaml")]
    for key in ("device", "cuda_tests"):
        if rec.get(key) and os.path.exists(os.path.join(d, rec[key])):
            files.append(os.path.join(d, rec[key]))
    return files


def card_outputs():
    return [os.path.join(d, "REPORT.md") for d in CARDS.values()]


def all_outputs():
    """`all`: with `cards` (a GPU config) the cards' reports from their committed runs and
    nothing else (nothing is measured); otherwise theory, measured, LM parity and the report."""
    if CARDS:
        return card_outputs()
    return theory_outputs() + measured_outputs() + lm_in_all() + report_outputs()
