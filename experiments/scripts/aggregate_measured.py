"""Concatenate the comparison groups' CSVs into results/measured.csv (one row per method).

Every column is what `membptt bench` wrote (docs/results-schema.md); ``group`` names the group
(one process, interleaved timing) and ``ratio_*`` the per-round ratios to its baseline. Refuses
a group file whose rows do not share one group id, one host and one run time (rows of
different runs pasted together would make its ratios meaningless).
"""

import pandas as pd
from pipeline_common import start, write_csv

DTYPES = {"budget_requested": str, "params": str, "label": str, "group": str}


def main(smk):
    start(smk)
    frames = []
    for path in sorted(smk.input):
        d = pd.read_csv(path, dtype=DTYPES)
        for col in ("group", "hostname", "timestamp"):
            vals = set(d[col].dropna())
            if len(vals) > 1:
                raise SystemExit(f"{path}: rows of one group must share one {col}, found "
                                 f"{sorted(vals)}: rerun the group")
        frames.append(d)
        print(f"{path}: group {d.group.iloc[0]}, {len(d)} row(s), status "
              f"{', '.join(map(str, d.status))}")
    df = pd.concat(frames, ignore_index=True).sort_values(["group", "method", "label"],
                                                         kind="stable")
    write_csv(df, smk.output.csv)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
