"""Check that two pipeline runs (e.g. local and Slurm) produced the same results.

    python experiments/slurm/compare_runs.py RUN_A RUN_B

Compares every CSV under ``RUN_A/results`` with the same file under ``RUN_B/results``:
theory CSVs must be identical; measured CSVs (``results/groups/*``, ``results/measured.csv``)
must agree on every column except the provenance and timing columns
(``pipeline_common.PROVENANCE_COLUMNS`` and ``TIMING_COLUMNS``), which record where, when
and how fast a row was made. ``results/lm_parity.csv`` (a seeded training run: its losses must
agree exactly) also differs in its own wall-clock and machine columns (``LM_PARITY_IGNORED``).
The theory tables (Markdown and LaTeX) must be identical too.

Rows planned on *measured* costs (``cost_model`` = ``measured``: ``msm-measured``,
``hsm-measured``, ``chen-measured``) are planned on the probe's timings, so their plan (block
length, op counts, predicted peak and cost, and the peak, loss and gradient error of running it)
legitimately differs between two clean runs: for those rows the columns of
``MEASURED_PLAN_COLUMNS`` are not compared (every other column is, the budget included).
Exits 1 listing every difference, 0 when the runs agree.
"""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from pipeline_common import PROVENANCE_COLUMNS, TIMING_COLUMNS  # noqa: E402

IGNORED = set(PROVENANCE_COLUMNS) | set(TIMING_COLUMNS)
# lm_parity.py's rows: the seconds since its model started (elapsed_s), the run's wall time
# (total_wall_s) and the machine string; every loss column is a result
LM_PARITY_IGNORED = IGNORED | {"elapsed_s", "total_wall_s", "machine"}
TIMED_TABLES = {"equal_memory", "measured_points"}
# what a plan on measured (timed) costs chooses, and what running that plan gives
MEASURED_PLAN_COLUMNS = (
    "params", "block", "forward_ops", "backward_ops", "graph_forwards", "predicted_peak_units",
    "predicted_peak_bytes", "predicted_total_peak_bytes", "predicted_cost", "working_set_bytes",
    "peak_bytes", "loss", "grad_error",
)


def mask_measured_plans(da: pd.DataFrame, db: pd.DataFrame) -> int:
    """Blank ``MEASURED_PLAN_COLUMNS`` in the rows planned on measured costs (in either run);
    returns how many rows. The frames must have the same shape (rows in the same order)."""
    if "cost_model" not in da.columns or "cost_model" not in db.columns or len(da) != len(db):
        return 0
    rows = ((da["cost_model"] == "measured").to_numpy()
            | (db["cost_model"] == "measured").to_numpy())
    cols = [c for c in MEASURED_PLAN_COLUMNS if c in da.columns and c in db.columns]
    if rows.any() and cols:
        for df in (da, db):
            for c in cols:
                df[c] = df[c].astype(object)
            df.loc[rows, cols] = None
    return int(rows.sum())


def compare(a: Path, b: Path) -> list[str]:
    problems, n = [], 0
    files_a = {p.relative_to(a) for p in (a / "results").rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in (b / "results").rglob("*") if p.is_file()}
    wanted = {p for p in files_a | files_b
              if p.suffix in (".csv", ".md", ".tex") and "logs" not in p.parts
              and "benchmarks" not in p.parts}
    for rel in sorted(wanted):
        if rel not in files_a or rel not in files_b:
            problems.append(f"{rel}: only in {'B' if rel not in files_a else 'A'}")
            continue
        n += 1
        if rel.suffix in (".md", ".tex"):
            if rel.stem in TIMED_TABLES:
                continue
            if (a / rel).read_bytes() != (b / rel).read_bytes():
                problems.append(f"{rel}: tables differ")
            continue
        da, db = pd.read_csv(a / rel), pd.read_csv(b / rel)
        if rel.parts == ("results", "lm_parity.csv"):
            ignored = LM_PARITY_IGNORED
        elif "groups" in rel.parts or rel.name == "measured.csv":
            ignored = IGNORED
        else:  # theory: every column
            ignored = set()
        da = da.drop(columns=[c for c in da.columns if c in ignored])
        db = db.drop(columns=[c for c in db.columns if c in ignored])
        if list(da.columns) != list(db.columns) or da.shape != db.shape:
            problems.append(f"{rel}: shape/columns differ {da.shape} vs {db.shape}")
            continue
        if ignored is IGNORED:
            mask_measured_plans(da, db)
        try:
            pd.testing.assert_frame_equal(da, db, check_exact=True)
        except AssertionError as exc:
            problems.append(f"{rel}: {str(exc).splitlines()[0]} ... {exc}")
    print(f"compared {n} files under {a}/results and {b}/results; "
          f"ignored measured columns: {', '.join(sorted(IGNORED))}; "
          f"lm_parity.csv also: {', '.join(sorted(LM_PARITY_IGNORED - IGNORED))}; rows planned "
          f"on measured costs also: {', '.join(MEASURED_PLAN_COLUMNS)}")
    return problems


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    problems = compare(Path(argv[1]), Path(argv[2]))
    for p in problems:
        print("DIFFERS:", p)
    print("RESULT:", "equal" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
