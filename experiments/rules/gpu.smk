# GPU reports from committed card runs (config key `cards`: card name -> folder with card.yaml).
# experiments/gpu/run.sh measures on the GPU and writes such a folder; these rules turn it into
# <folder>/REPORT.md and <folder>/report/{measured.csv, figures/, logs/} on any machine. They
# measure nothing: a card's group CSVs are source files here (no rule makes them), so
# `snakemake -n all --configfile experiments/config/gpu.yaml` lists no bench job, and a group
# the card's run planned but did not finish is shown as not measured.

if CARDS:

    wildcard_constraints:
        carddir="|".join(re.escape(d) for d in CARDS.values()),

    rule gpu_reports:
        # cheap: runs where Snakemake runs, never as a cluster job
        localrule: True
        input:
            card_outputs(),

    rule gpu_aggregate:
        # cheap: runs where Snakemake runs, never as a cluster job
        localrule: True
        input:
            lambda w: card_main_csvs(w.carddir),
        output:
            csv="{carddir}/report/measured.csv",
        log:
            "{carddir}/report/logs/aggregate.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/aggregate_measured.py"

    rule gpu_fig2b_time:
        # cheap: runs where Snakemake runs, never as a cluster job
        localrule: True
        input:
            csv="{carddir}/report/measured.csv",
        output:
            [f"{{carddir}}/report/figures/fig2b_time.{ext}" for ext in FIG_EXT],
        params:
            lengths=lambda w: card_fig2b(w.carddir)[0],
            budgets=lambda w: card_fig2b(w.carddir)[1],
        log:
            "{carddir}/report/logs/fig2b_time.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/fig2b_time.py"

    rule gpu_fig_tradeoff:
        # cheap: runs where Snakemake runs, never as a cluster job
        localrule: True
        input:
            csv="{carddir}/report/measured.csv",
            published=PUBLISHED,
        output:
            [f"{{carddir}}/report/figures/tradeoff_memory_time.{ext}" for ext in FIG_EXT],
        params:
            seq_len=lambda w: card_tradeoff_T(w.carddir),
        log:
            "{carddir}/report/logs/fig_tradeoff.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/fig_tradeoff.py"

    rule gpu_fig_predicted_vs_measured:
        # cheap: runs where Snakemake runs, never as a cluster job
        localrule: True
        input:
            csv="{carddir}/report/measured.csv",
        output:
            [f"{{carddir}}/report/figures/predicted_vs_measured.{ext}" for ext in FIG_EXT],
        log:
            "{carddir}/report/logs/fig_predicted_vs_measured.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/fig_predicted_vs_measured.py"

    rule gpu_fig_reversible:
        # cheap: runs where Snakemake runs, never as a cluster job
        localrule: True
        input:
            csvs=lambda w: card_rev_csvs(w.carddir),
        output:
            [f"{{carddir}}/report/figures/reversible_memory_time.{ext}" for ext in FIG_EXT],
        log:
            "{carddir}/report/logs/fig_reversible.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/fig_reversible.py"

    rule gpu_report:
        # cheap: runs where Snakemake runs, never as a cluster job
        localrule: True
        input:
            card=lambda w: card_inputs(w.carddir),
            published=PUBLISHED,
            csvs=lambda w: list(card_csvs(w.carddir).values()),
            figures=lambda w: card_figures(w.carddir),
        output:
            report="{carddir}/REPORT.md",
        params:
            carddir=lambda w: w.carddir,
            config=config,
        log:
            "{carddir}/report/logs/report.log",
        conda:
            "../envs/pipeline.yaml"
        script:
            "../scripts/report_gpu.py"
