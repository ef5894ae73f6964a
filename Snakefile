# membptt reproduction pipeline: exact theory (DP) and measured sweeps -> tidy CSVs under
# results/ -> figures/ (PNG and PDF) -> tables (Markdown and LaTeX) -> paper/REPORT.md.
#
#   snakemake all --cores 2                                   # default config (CPU, minutes)
#   snakemake all --cores 16 --configfile experiments/config/paper.yaml
#   snakemake all --profile profiles/slurm                    # on a Slurm cluster
#
# docs/pipeline.md describes every rule, output and config key.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "experiments/config/default.yaml"


validate(config, "experiments/config/schema.yaml")


include: "experiments/rules/common.smk"
include: "experiments/rules/theory.smk"
include: "experiments/rules/measured.smk"
include: "experiments/rules/report.smk"


rule all:
    input:
        theory_outputs(),
        measured_outputs(),
        report_outputs(),
    default_target: True


rule theory:
    input:
        theory_outputs(),


rule measured:
    input:
        measured_outputs(),


# cheap jobs (figures, tables, aggregation, report) run where Snakemake runs, not as cluster jobs
localrules:
    all,
    theory,
    measured,
    aggregate_measured,
    fig_cost_per_step,
    fig3_policies,
    fig6_hsm_ism_msm,
    fig7_chen,
    fig_bounds,
    fig2b_time,
    fig_tradeoff,
    fig_predicted_vs_measured,
    table_cost_per_step,
    table_paper_values,
    table_crossovers,
    table_bounds,
    table_equal_memory,
    table_measured_points,
    report,
