"""The pipeline's figures and tables, listed once: the rules (experiments/rules/common.smk),
the report and the tests (tests/test_pipeline.py) all read these lists."""

FIG_EXT = ("png", "pdf")
THEORY_FIGURES = ("fig2a_hsm", "fig5a_ism", "fig5b_msm", "fig3_policies", "fig6_hsm_ism_msm",
                  "fig7_chen", "bounds_hsm")
MEASURED_FIGURES = ("fig2b_time", "tradeoff_memory_time", "predicted_vs_measured")
THEORY_TABLES = ("cost_per_step", "paper_values", "crossovers", "bounds")
MEASURED_TABLES = ("equal_memory", "measured_points")
REVERSIBLE_FIGURES = ("reversible_memory_time",)  # the reversible comparison groups
LM_FIGURES = ("lm_parity",)  # the language-model parity run (lm_parity.py)


# -- the comparison groups (one `membptt bench` process each), from a resolved config -------
# The rules (experiments/rules/common.smk) and the GPU run (experiments/gpu/run_groups.py,
# which runs without Snakemake on a bare GPU machine) both build the groups here, so the two
# run the same commands.

def bench_args(workload: dict) -> list[str]:
    """`membptt bench` options of the workload (not --quiet: progress goes to the group's log)."""
    args = ["--model", workload["model"], "--hidden", str(workload["hidden"]),
            "--input-size", str(workload["input_size"]), "--classes", str(workload["classes"]),
            "--batch", str(workload["batch"]), "--dtype", workload["dtype"],
            "--device", workload["device"], "--seed", str(workload["seed"]),
            "--repeats", str(workload["repeats"]), "--warmup", str(workload["warmup"]),
            "--threads", str(workload["threads"])]
    if not workload["grad_check"]:
        args.append("--no-grad-check")
    if not workload["rss"]:
        args.append("--no-rss")
    return args


def _with_args(args, **values):
    """``args`` with the value after each ``--key`` replaced (``input_size`` -> --input-size)."""
    args = list(args)
    for key, value in values.items():
        args[args.index(f"--{key.replace('_', '-')}") + 1] = str(value)
    return args


def measured_groups(measured: dict) -> dict:
    """{group: {"seq_len", "baseline", "methods", "args"}}: Fig. 2b and the trade-off groups.

      fig2b_T<T>     fig2b.baselines (the first is the baseline) and HSM at fig2b.budgets
      tradeoff_T<T>  tradeoff.fixed_methods (the first is the baseline), every checkpoint
                     method at every K of tradeoff.segments and at round(sqrt(T)), every plan
                     method at every budget, and the equal_memory methods at the measured peak
                     of equal_memory_reference (memory=peak(<reference>))
    """
    if not measured["enabled"]:
        return {}
    args = bench_args(measured["workload"])
    groups = {}
    f2 = measured["fig2b"]
    for T in f2["lengths"]:
        methods = list(f2["baselines"]) + [f"hsm:memory={int(b)}" for b in f2["budgets"]]
        groups[f"fig2b_T{T}"] = {"seq_len": T, "baseline": f2["baselines"][0],
                                 "methods": list(dict.fromkeys(methods)), "args": args}
    tr = measured["tradeoff"]
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
                                "methods": list(dict.fromkeys(methods)), "args": args}
    return groups


def reversible_groups(measured: dict) -> dict:
    """The reversible groups (measured.reversible), one per model at its own sizes:

      reversible_<model>_T<T>   full (the baseline: plain autograd through the same fixed-point
                                cell), reversible (its own backward) and every equal_memory plan
                                method at the reversible method's measured peak, and MSM at
                                every msm_budgets budget
    """
    rev = measured.get("reversible", {})
    if not (measured["enabled"] and rev.get("enabled")):
        return {}
    args = bench_args(measured["workload"])
    T = rev["seq_len"]
    methods = ["full", "reversible"] + [f"{m}:memory=peak(reversible)"
                                        for m in rev["equal_memory"]]
    methods += [f"msm:memory={b}" for b in rev["msm_budgets"]]
    return {f"reversible_{m.replace('-', '_')}_T{T}": {
                "seq_len": T, "baseline": "full", "methods": methods,
                "args": _with_args(args, model=m, hidden=rev["hidden"],
                                   input_size=rev["input_size"], classes=rev["classes"],
                                   batch=rev["batch"])}
            for m in rev["models"]}


def bench_command(group: str, g: dict) -> list[str]:
    """The group's `membptt bench` arguments (after the program name; ``--out`` follows)."""
    return ["bench", "--method", ",".join(g["methods"]), "--seq-len", str(g["seq_len"]),
            "--baseline", g["baseline"], "--group", group, *g["args"]]
