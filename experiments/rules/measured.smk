# Measured comparison groups (membptt bench, one process per group); targets in common.smk.

rule bench_group:
    output:
        csv=out("results/groups/{group}.csv"),
    params:
        membptt=MEMBPTT,
        group=lambda w: w.group,
        seq_len=lambda w: GROUPS[w.group]["seq_len"],
        baseline=lambda w: GROUPS[w.group]["baseline"],
        methods=lambda w: GROUPS[w.group]["methods"],
        args=lambda w: GROUPS[w.group].get("args", BENCH_ARGS),
    threads: ALL_CORES
    resources:
        gpu=1 if DEVICE.startswith("cuda") else 0,
        runtime=60,
        mem_mb=8000,
    log:
        out("results/logs/bench/{group}.log"),
    benchmark:
        out("results/benchmarks/bench/{group}.tsv")
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/bench_group.py"


rule aggregate_measured:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        group_csvs(),
    output:
        csv=out("results/measured.csv"),
    log:
        out("results/logs/aggregate_measured.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/aggregate_measured.py"


rule fig2b_time:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=out("results/measured.csv"),
    output:
        figure("fig2b_time"),
    params:
        lengths=MEASURED["fig2b"]["lengths"],
        budgets=MEASURED["fig2b"]["budgets"],
    log:
        out("results/logs/fig2b_time.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig2b_time.py"


rule fig_tradeoff:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=out("results/measured.csv"),
        published=PUBLISHED,
    output:
        figure("tradeoff_memory_time"),
    params:
        seq_len=MEASURED["tradeoff"]["seq_len"],
    log:
        out("results/logs/fig_tradeoff.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig_tradeoff.py"


rule fig_predicted_vs_measured:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=out("results/measured.csv"),
    output:
        figure("predicted_vs_measured"),
    log:
        out("results/logs/fig_predicted_vs_measured.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig_predicted_vs_measured.py"


rule table_equal_memory:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=out("results/measured.csv"),
    output:
        md=table("equal_memory")[0],
        tex=table("equal_memory")[1],
    params:
        seq_len=MEASURED["tradeoff"]["seq_len"],
        reference=MEASURED["tradeoff"]["equal_memory_reference"],
    log:
        out("results/logs/table_equal_memory.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table_equal_memory.py"


rule table_measured_points:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=out("results/measured.csv"),
    output:
        md=table("measured_points")[0],
        tex=table("measured_points")[1],
    params:
        seq_len=MEASURED["tradeoff"]["seq_len"],
    log:
        out("results/logs/table_measured_points.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table_measured_points.py"
