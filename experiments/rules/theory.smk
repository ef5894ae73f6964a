# Exact theory: DP tables (membptt.planning.dp), no hardware. CSVs under results/theory/,
# figures under figures/, tables under results/tables/.
# The theory jobs read paper/published.json as ancient(): its checkout time on a fresh clone
# never re-runs them (the DP results depend on the config, which is their params). After
# editing published.json, rerun them with `-R theory_curves theory_paper_values`.

rule theory_curves:
    input:
        published=ancient(PUBLISHED),
    output:
        csv=out("results/theory/curves_{strategy}.csv"),
        meta=out("results/theory/curves_{strategy}.meta.json"),
    params:
        lengths=THEORY["lengths"],
        budgets=THEORY["budgets"],
        alpha=THEORY["alpha"],
        msm_max_len=THEORY.get("msm_max_len", THEORY["lengths"]["max"]),
    log:
        out("results/logs/theory_curves/{strategy}.log"),
    benchmark:
        out("results/benchmarks/theory_curves/{strategy}.tsv")
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/theory_curves.py"


rule theory_fig3:
    output:
        ops=THEORY_CSVS["fig3_ops"],
        summary=THEORY_CSVS["fig3_summary"],
        meta_ops=meta(THEORY_CSVS["fig3_ops"]),
        meta_summary=meta(THEORY_CSVS["fig3_summary"]),
    params:
        memory=THEORY["fig3"]["memory"],
        lengths=THEORY["fig3"]["lengths"],
    log:
        out("results/logs/theory_fig3.log"),
    benchmark:
        out("results/benchmarks/theory_fig3.tsv")
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/theory_fig3.py"


rule theory_fig6:
    output:
        curves=THEORY_CSVS["fig6_curves"],
        crossovers=THEORY_CSVS["fig6_crossovers"],
        meta_curves=meta(THEORY_CSVS["fig6_curves"]),
        meta_crossovers=meta(THEORY_CSVS["fig6_crossovers"]),
    params:
        alpha=THEORY["alpha"],
        budgets_internal=THEORY["fig6"]["budgets_internal"],
        max_len=THEORY["fig6"]["max_len"],
    log:
        out("results/logs/theory_fig6.log"),
    benchmark:
        out("results/benchmarks/theory_fig6.tsv")
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/theory_fig6.py"


rule theory_fig7:
    output:
        csv=THEORY_CSVS["fig7_chen"],
        meta=meta(THEORY_CSVS["fig7_chen"]),
    params:
        betas=THEORY["fig7"]["betas"],
        cost_per_step=THEORY["fig7"]["cost_per_step"],
        lengths=THEORY["fig7"]["lengths"],
    log:
        out("results/logs/theory_fig7.log"),
    benchmark:
        out("results/benchmarks/theory_fig7.tsv")
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/theory_fig7.py"


rule theory_bounds:
    output:
        curves=THEORY_CSVS["bounds"],
        claims=THEORY_CSVS["bounds_claims"],
        meta_curves=meta(THEORY_CSVS["bounds"]),
        meta_claims=meta(THEORY_CSVS["bounds_claims"]),
    params:
        memories=THEORY["bounds"]["memories"],
        max_len=THEORY["bounds"]["max_len"],
        claim_max_len=THEORY["bounds"]["claim_max_len"],
        claim_max_memory=THEORY["bounds"]["claim_max_memory"],
    log:
        out("results/logs/theory_bounds.log"),
    benchmark:
        out("results/benchmarks/theory_bounds.tsv")
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/theory_bounds.py"


rule theory_paper_values:
    input:
        published=ancient(PUBLISHED),
    output:
        csv=THEORY_CSVS["paper_values"],
        meta=meta(THEORY_CSVS["paper_values"]),
    log:
        out("results/logs/theory_paper_values.log"),
    benchmark:
        out("results/benchmarks/theory_paper_values.tsv")
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/theory_paper_values.py"


# -- figures (each from the CSVs above only) ----------------------------------------------------

rule fig_cost_per_step:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=out("results/theory/curves_{strategy}.csv"),
        published=PUBLISHED,
    output:
        expand(out("figures/fig{{fig}}_{{strategy}}.{ext}"), ext=FIG_EXT),
    wildcard_constraints:
        fig="2a|5a|5b",
    log:
        out("results/logs/fig_cost_per_step/fig{fig}_{strategy}.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig_cost_per_step.py"


rule fig3_policies:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        ops=THEORY_CSVS["fig3_ops"],
        summary=THEORY_CSVS["fig3_summary"],
    output:
        figure("fig3_policies"),
    log:
        out("results/logs/fig3_policies.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig3_policies.py"


rule fig6_hsm_ism_msm:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        curves=THEORY_CSVS["fig6_curves"],
        crossovers=THEORY_CSVS["fig6_crossovers"],
    output:
        figure("fig6_hsm_ism_msm"),
    log:
        out("results/logs/fig6_hsm_ism_msm.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig6_hsm_ism_msm.py"


rule fig7_chen:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=THEORY_CSVS["fig7_chen"],
    output:
        figure("fig7_chen"),
    log:
        out("results/logs/fig7_chen.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig7_chen.py"


rule fig_bounds:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=THEORY_CSVS["bounds"],
    output:
        figure("bounds_hsm"),
    log:
        out("results/logs/fig_bounds.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig_bounds.py"


# -- tables (Markdown and LaTeX) -----------------------------------------------------------------

rule table_cost_per_step:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        hsm=THEORY_CSVS["curves_hsm"],
        ism=THEORY_CSVS["curves_ism"],
        msm=THEORY_CSVS["curves_msm"],
        published=PUBLISHED,
    output:
        md=table("cost_per_step")[0],
        tex=table("cost_per_step")[1],
        csv=COST_PER_STEP_CHECKS,
    params:
        tolerance=config["report"]["tolerance"],
    log:
        out("results/logs/table_cost_per_step.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table_cost_per_step.py"


rule table_paper_values:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=THEORY_CSVS["paper_values"],
    output:
        md=table("paper_values")[0],
        tex=table("paper_values")[1],
    log:
        out("results/logs/table_paper_values.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table_paper_values.py"


rule table_crossovers:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=THEORY_CSVS["fig6_crossovers"],
        published=PUBLISHED,
    output:
        md=table("crossovers")[0],
        tex=table("crossovers")[1],
    log:
        out("results/logs/table_crossovers.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table_crossovers.py"


rule table_bounds:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=THEORY_CSVS["bounds_claims"],
    output:
        md=table("bounds")[0],
        tex=table("bounds")[1],
    log:
        out("results/logs/table_bounds.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table_bounds.py"
