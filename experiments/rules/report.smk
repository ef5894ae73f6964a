# The reproduction report: paper/REPORT.md, regenerated from the CSVs, tables and figures.

rule report:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        template=REPORT_TEMPLATE,
        published=PUBLISHED,
        theory=[c for c in THEORY_CSVS.values()],
        theory_meta=[meta(c) for c in THEORY_CSVS.values()],
        cps=COST_PER_STEP_CHECKS,
        tables=[f for name in THEORY_TABLES for f in table(name)],
        figures=[f for name in THEORY_FIGURES for f in figure(name)],
        measured=measured_outputs(),
        benchmarks=measured_benchmarks(),
        reversible=reversible_csvs(),
        lm=lm_in_all(),
        snn=snn_csvs(),
    output:
        report=out("paper/REPORT.md"),
    params:
        config=config,
    log:
        out("results/logs/report.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/report.py"
