"""Concatenate the per-point CSVs into results/measured.csv (one row per method and point).

Adds ``point`` (the point file's name without .csv) and ``budget_token`` (its budget part);
every other column is exactly what `membptt bench` wrote (docs/results-schema.md).
"""

from pathlib import Path

import pandas as pd
from pipeline_common import start, write_csv


def main(smk):
    start(smk)
    frames = []
    for path in sorted(smk.input):
        d = pd.read_csv(path, dtype={"budget_requested": str, "params": str}, keep_default_na=True)
        name = Path(path).stem
        d.insert(0, "point", name)
        d.insert(1, "budget_token", name.rsplit("__", 1)[-1])
        frames.append(d)
        print(f"{name}: {len(d)} row(s), status {', '.join(map(str, d.status))}")
    df = pd.concat(frames, ignore_index=True).sort_values(["point", "method"], kind="stable")
    write_csv(df, smk.output.csv)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
