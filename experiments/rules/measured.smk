# Measured sweeps (membptt bench); targets and helpers in common.smk.

rule bench_point:
    output:
        csv=out("results/points/{method}__T{T}__{budget}.csv"),
    wildcard_constraints:
        budget=r"none|u\d+|\d+(p\d+)?pct",
    params:
        membptt=MEMBPTT,
        memory=lambda w: "" if budget_arg(w.budget) is None else f"--memory {budget_arg(w.budget)}",
        args=" ".join(BENCH_ARGS),
    threads: BENCH_THREADS
    resources:
        gpu=1 if DEVICE.startswith("cuda") else 0,
        runtime=30,
        mem_mb=4000,
    log:
        out("results/logs/bench/{method}__T{T}__{budget}.log"),
    benchmark:
        out("results/benchmarks/bench/{method}__T{T}__{budget}.tsv")
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.membptt} bench --method {wildcards.method} --seq-len {wildcards.T}"
        " {params.memory} {params.args} --out {output.csv} > {log} 2>&1"


rule bench_point_equal_memory:
    input:
        unpack(equal_memory_inputs),
    output:
        csv=out("results/points/{method}__T{T}__ckpt.csv"),
    params:
        membptt=MEMBPTT,
        args=BENCH_ARGS,
    threads: BENCH_THREADS
    resources:
        gpu=1 if DEVICE.startswith("cuda") else 0,
        runtime=30,
        mem_mb=4000,
    log:
        out("results/logs/bench/{method}__T{T}__ckpt.log"),
    benchmark:
        out("results/benchmarks/bench/{method}__T{T}__ckpt.tsv")
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/bench_equal_memory.py"


rule aggregate_measured:
    input:
        measured_points(),
    output:
        csv=out("results/measured.csv"),
    log:
        out("results/logs/aggregate_measured.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/aggregate_measured.py"


rule fig2b_time:
    input:
        csv=out("results/measured.csv"),
    output:
        figure("fig2b_time"),
    params:
        lengths=MEASURED.get("fig2b", {}).get("lengths", []),
        budgets=MEASURED.get("fig2b", {}).get("budgets", []),
        baselines=MEASURED.get("fig2b", {}).get("baselines", []),
    log:
        out("results/logs/fig2b_time.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig2b_time.py"


rule fig_tradeoff:
    input:
        csv=out("results/measured.csv"),
        published=PUBLISHED,
    output:
        figure("tradeoff_memory_time"),
    params:
        seq_len=MEASURED.get("tradeoff", {}).get("seq_len", 1000),
    log:
        out("results/logs/fig_tradeoff.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig_tradeoff.py"


rule fig_predicted_vs_measured:
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
    input:
        csv=out("results/measured.csv"),
    output:
        md=table("equal_memory")[0],
        tex=table("equal_memory")[1],
    params:
        seq_len=MEASURED.get("tradeoff", {}).get("seq_len", 1000),
    log:
        out("results/logs/table_equal_memory.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table_equal_memory.py"


rule table_measured_points:
    input:
        csv=out("results/measured.csv"),
    output:
        md=table("measured_points")[0],
        tex=table("measured_points")[1],
    params:
        seq_len=MEASURED.get("tradeoff", {}).get("seq_len", 1000),
    log:
        out("results/logs/table_measured_points.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/table_measured_points.py"
