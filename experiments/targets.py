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
