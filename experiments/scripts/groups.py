"""Reading results/measured.csv by comparison group; every time ratio is computed in one group.

A group is one `membptt bench` process whose methods were timed interleaved, round by round
(docs/results-schema.md). ``ratio_median``/``ratio_q1``/``ratio_q3`` of a row are its per-round
ratios to the group's baseline; :func:`ratio_between` divides two rows of one group round by
round. Nothing here divides times of two groups: :func:`ratio_between` refuses rows of
different groups, and :func:`runs_summary` says (loudly) when the groups of one results file
come from different hosts.
"""

from __future__ import annotations

import statistics

import pandas as pd

DTYPES = {"budget_requested": str, "params": str, "label": str, "group": str,
          "time_samples_s": str, "ratio_samples": str,
          "group_baseline": str}


def load(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=DTYPES)


def samples(row) -> list[float]:
    text = row.time_samples_s if hasattr(row, "time_samples_s") else row["time_samples_s"]
    return [float(x) for x in str(text).split()] if pd.notna(text) else []


def ratio_between(a, b) -> dict:
    """Per-round ratios of row ``a``'s times to row ``b``'s: median, Q1, Q3 (one group only)."""
    if a.group != b.group:
        raise ValueError(f"refusing to divide times of two groups: {a.label!r} of {a.group!r} "
                         f"by {b.label!r} of {b.group!r}")
    sa, sb = samples(a), samples(b)
    if not sa or len(sa) != len(sb):
        raise ValueError(f"{a.label!r} and {b.label!r} of group {a.group!r} have "
                         f"{len(sa)} and {len(sb)} timed rounds")
    r = sorted(x / y for x, y in zip(sa, sb))
    return {"median": statistics.median(r), "q1": _q(r, 0.25), "q3": _q(r, 0.75),
            "rounds": len(r)}


def _q(s, q):
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def runs_summary(df: pd.DataFrame) -> dict:
    """Hosts, devices, commits and time span of the groups; ``mixed`` if more than one host."""
    g = df.groupby("group").agg(hostname=("hostname", "first"), device=("device_model", "first"),
                                commit=("git_commit", "first"), timestamp=("timestamp", "first"))
    return {"groups": len(g), "hosts": sorted(g.hostname.dropna().unique()),
            "devices": sorted(g.device.dropna().unique()),
            "commits": sorted(g.commit.dropna().unique()),
            "first": g.timestamp.min(), "last": g.timestamp.max(),
            "mixed": g.hostname.nunique() > 1 or g.device.nunique() > 1}


def mixed_warning(summary: dict) -> str:
    """A loud line when the groups come from more than one host or device; '' otherwise."""
    if not summary["mixed"]:
        return ""
    return ("**WARNING: the comparison groups of this file come from different machines "
            f"(hosts {', '.join(summary['hosts'])}; devices {'; '.join(summary['devices'])}). "
            "Ratios inside a group stay valid; nothing here compares two groups' times.**")
