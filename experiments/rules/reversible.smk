# Reversible RNNs (MacKay et al. 2018; docs/reversible.md): the figure of the reversible
# comparison groups (measured by bench_group, measured.smk) and the language-model parity run.

rule fig_reversible:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csvs=reversible_csvs(),
    output:
        figure("reversible_memory_time"),
    log:
        out("results/logs/fig_reversible.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig_reversible.py"


rule lm_parity:
    # GRU, RevGRU, LSTM, RevLSTM byte-level LMs trained alike (minutes: its own job)
    output:
        csv=LM_CSV,
    params:
        args=lambda w: [f"--{k.replace('_', '-')}={v}" for k, v in sorted(LM.items())
                        if k != "in_all"],
    threads: 1
    resources:
        runtime=60,
        mem_mb=4000,
    log:
        out("results/logs/lm_parity.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/lm_parity.py"


rule fig_lm_parity:
    # cheap: runs where Snakemake runs, never as a cluster job
    localrule: True
    input:
        csv=LM_CSV,
    output:
        figure("lm_parity"),
    log:
        out("results/logs/fig_lm_parity.log"),
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/fig_lm_parity.py"
