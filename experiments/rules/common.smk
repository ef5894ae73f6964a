# Paths and target lists shared by every rule file.
import os
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
)


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
# of the report, the figures and the tables is computed inside one group. Groups:
#   fig2b_T<T>        fig2b.baselines (the first is the baseline) and HSM at fig2b.budgets
#   tradeoff_T<T>     tradeoff.fixed_methods (the first is the baseline), every checkpoint
#                     method at every K of tradeoff.segments and at round(sqrt(T)), every plan
#                     method at every budget, and the equal_memory methods at the measured peak
#                     of equal_memory_reference (memory=peak(<reference>))
# A group depends only on the config (its methods are rule params), never on another file, so
# a fresh clone (every file's mtime = checkout time) has nothing to re-measure.


def measured_groups():
    """{group name: {"seq_len", "baseline", "methods"}} from the config."""
    if not MEASURED["enabled"]:
        return {}
    groups = {}
    f2 = MEASURED["fig2b"]
    for T in f2["lengths"]:
        methods = list(f2["baselines"]) + [f"hsm:memory={int(b)}" for b in f2["budgets"]]
        groups[f"fig2b_T{T}"] = {"seq_len": T, "baseline": f2["baselines"][0],
                                 "methods": list(dict.fromkeys(methods))}
    tr = MEASURED["tradeoff"]
    T = tr["seq_len"]
    default_k = max(1, round(T ** 0.5))
    methods = list(tr["fixed_methods"])
    for m in tr["checkpoint_methods"]:
        methods.append(m)  # default K = round(sqrt(T))
        methods += [f"{m}:segments={k}" for k in tr["segments"] if k != default_k]
    for m in tr["plan_methods"]:
        methods += [f"{m}:memory={b}" for b in tr["budgets"]]
    ref = tr["equal_memory_reference"]
    if tr["equal_memory"]:
        if ref not in methods:
            methods.append(ref)
        methods += [f"{m}:memory=peak({ref})" for m in tr["equal_memory"]]
    groups[f"tradeoff_T{T}"] = {"seq_len": T, "baseline": tr["fixed_methods"][0],
                                "methods": list(dict.fromkeys(methods))}
    return groups


DEVICE = WORKLOAD["device"]
BENCH_ARGS = [
    "--model", WORKLOAD["model"],
    "--hidden", str(WORKLOAD["hidden"]),
    "--input-size", str(WORKLOAD["input_size"]),
    "--classes", str(WORKLOAD["classes"]),
    "--batch", str(WORKLOAD["batch"]),
    "--dtype", WORKLOAD["dtype"],
    "--device", DEVICE,
    "--seed", str(WORKLOAD["seed"]),
    "--repeats", str(WORKLOAD["repeats"]),
    "--warmup", str(WORKLOAD["warmup"]),
    "--threads", str(WORKLOAD["threads"]),
]  # not --quiet: the group's progress goes to its log
if not WORKLOAD["grad_check"]:
    BENCH_ARGS.append("--no-grad-check")
if not WORKLOAD["rss"]:
    BENCH_ARGS.append("--no-rss")


# The reversible groups (measured.reversible): one group per reversible model, on that model at
# its own sizes (the workload's other keys: dtype, device, seed, repeats, threads, ...):
#   reversible_<model>_T<T>   full (the baseline: plain autograd through the same fixed-point
#                             cell), reversible (its own backward) and every equal_memory plan
#                             method at the reversible method's measured peak, and MSM at
#                             every msm_budgets budget (a point that fits when the peak cannot)
REV = MEASURED.get("reversible", {})


def _with_args(args, **values):
    """``args`` with the value after each ``--key`` replaced (``input_size`` -> --input-size)."""
    args = list(args)
    for key, value in values.items():
        args[args.index("--" + key.replace("_", "-")) + 1] = str(value)
    return args


def reversible_groups():
    """{group name: {"seq_len", "baseline", "methods", "args"}} of measured.reversible."""
    if not (MEASURED["enabled"] and REV.get("enabled")):
        return {}
    T = REV["seq_len"]
    methods = ["full", "reversible"] + [f"{m}:memory=peak(reversible)"
                                        for m in REV["equal_memory"]]
    methods += [f"msm:memory={b}" for b in REV["msm_budgets"]]
    return {f"reversible_{m.replace('-', '_')}_T{T}": {
                "seq_len": T, "baseline": "full", "methods": methods,
                "args": _with_args(BENCH_ARGS, model=m, hidden=REV["hidden"],
                                   input_size=REV["input_size"], classes=REV["classes"],
                                   batch=REV["batch"])}
            for m in REV["models"]}


REV_GROUPS = reversible_groups()
GROUPS = {**measured_groups(), **REV_GROUPS}


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


def lm_in_all():
    return lm_outputs() if LM.get("in_all") else []


# -- report ------------------------------------------------------------------------------


def report_outputs():
    return [out("paper/REPORT.md")]

