# membptt reproduction pipeline: exact theory (DP) and measured sweeps -> tidy CSVs under
# results/ -> figures/ (PNG and PDF) -> tables (Markdown and LaTeX) -> paper/REPORT.md.
#
#   snakemake all --cores 2                     # default config; a fresh clone re-measures nothing
#   snakemake all --forceall --cores 2          # regenerate everything, measurements included
#   snakemake all --cores 16 --configfile experiments/config/paper.yaml
#   snakemake all --cores 2 --configfile experiments/config/gpu.yaml   # GPU reports, no GPU needed
#   snakemake all --profile profiles/slurm      # on a Slurm cluster
# profiles/default (read automatically) resumes killed runs and ignores script mtimes.
#
# docs/pipeline.md describes every rule, output and config key.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "experiments/config/default.yaml"


validate(config, "experiments/config/schema.yaml")


include: "experiments/rules/common.smk"
include: "experiments/rules/theory.smk"
include: "experiments/rules/measured.smk"
include: "experiments/rules/reversible.smk"
include: "experiments/rules/report.smk"
include: "experiments/rules/gpu.smk"


rule all:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        # theory, measured, LM parity and the report; with `cards` (experiments/config/
        # gpu.yaml) the cards' GPU reports from their committed runs instead (gpu.smk)
        all_outputs(),
    default_target: True


rule theory:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        theory_outputs(),


rule measured:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        measured_outputs(),


rule lm:
    # the language-model parity run and its figure (in `all` only with lm_parity.in_all)
    localrule: True
    input:
        lm_outputs(),
