"""Helpers shared by the pipeline scripts (imported by every script run by a Snakemake rule).

Nothing here computes a result: it writes files atomically, records provenance, builds length
grids, loads the paper's published numbers, and saves figures and tables in every format.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

# one atomic writer and one provenance source for the package and the pipeline
from membptt.measure.results import atomic_write_text, cpu_model, git  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]  # the repository (for git and the package version)

# Columns of results/measured.csv that record where and when a row was made: they differ
# between two runs of the same sweep; every other column is a result.
PROVENANCE_COLUMNS = (
    "device_model", "threads", "torch_version", "package_version", "python_version",
    "git_commit", "git_dirty", "hostname", "timestamp", "command",
)
# Columns that depend on the machine's speed or on the allocator: they differ between two runs
# even on one machine. A Slurm run and a local run agree on every other column.
TIMING_COLUMNS = (
    "time_median_s", "time_iqr_s", "time_q1_s", "time_q3_s", "time_min_s", "time_samples_s",
    "predicted_time_s", "probe_run_fixed_s", "probe_run_per_step_s", "probe_forward_graph_s",
    "probe_backward_s", "rss_peak_bytes", "rss_baseline_bytes", "cuda_peak_bytes",
    "ratio_median", "ratio_q1", "ratio_q3", "ratio_samples",
)


# -- files -------------------------------------------------------------------------------------

def write_csv(df, path) -> None:
    """Tidy CSV, written atomically; floats with 12 significant digits (stable across runs)."""
    atomic_write_text(path, df.to_csv(index=False, float_format="%.12g", lineterminator="\n"))


def write_json(obj, path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# -- provenance --------------------------------------------------------------------------------

def provenance(smk=None, started: float | None = None, script: str | None = None) -> dict:
    """Where, when and how a file was made: command (rule, script, parameters), machine,
    versions, commit. Written next to every theory CSV as ``<name>.meta.json``."""
    import numpy

    import membptt

    try:
        import torch
        torch_version = torch.__version__
    except ImportError:  # the theory part does not need torch
        torch_version = None
    commit = git(["rev-parse", "HEAD"]) or "unknown"
    dirty = git(["status", "--porcelain", "--untracked-files=no"])
    d = {
        "membptt_version": getattr(membptt, "__version__", "unknown"),
        "git_commit": commit,
        "git_dirty": None if dirty is None else bool(dirty),
        "python_version": platform.python_version(),
        "numpy_version": numpy.__version__,
        "torch_version": torch_version,
        "hostname": socket.gethostname(),
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} "
                   f"{platform.release()}",
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.executable,
    }
    if smk is not None:
        d["rule"] = smk.rule
        d["script"] = os.path.relpath(script, ROOT) if script else None
        d["params"] = {k: _plain(v) for k, v in smk.params.items()}
        d["inputs"] = [str(p) for p in smk.input]
        d["outputs"] = [str(p) for p in smk.output]
        d["command"] = (f"snakemake rule {smk.rule!r} -> "
                        + " ".join(str(p) for p in smk.output))
    if started is not None:
        d["wall_s"] = round(time.time() - started, 3)
    return d


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    try:
        return dict(v)
    except (TypeError, ValueError):
        return str(v)


# -- grids, published numbers ------------------------------------------------------------------

def length_grid(lo: int, hi: int, points: int, extra=()) -> list[int]:
    """Log-spaced integer lengths in [lo, hi] (unique), plus ``extra`` lengths inside it."""
    lo, hi = int(lo), int(hi)
    if points <= 1 or hi <= lo:
        vals = {lo, hi}
    else:
        step = (math.log(hi) - math.log(lo)) / (points - 1)
        vals = {int(round(math.exp(math.log(lo) + i * step))) for i in range(points)}
    vals |= {int(x) for x in extra if lo <= int(x) <= hi}
    return sorted(vals)


def load_published(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# -- figures -----------------------------------------------------------------------------------

def plotting():
    """Matplotlib (Agg) and seaborn with the pipeline's style; returns (plt, sns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    # deterministic output: no timestamps or random ids in the files
    matplotlib.rcParams["svg.hashsalt"] = "membptt"
    matplotlib.rcParams["pdf.fonttype"] = 42
    return plt, sns


def save_figure(fig, outputs) -> None:
    """Save ``fig`` to every path in ``outputs`` (PNG and PDF), atomically, without dates."""
    for out in outputs:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
        meta = {"CreationDate": None} if out.suffix == ".pdf" else {"Software": None}
        fig.savefig(tmp, dpi=150, bbox_inches="tight", metadata=meta)
        os.replace(tmp, out)


# -- tables ------------------------------------------------------------------------------------

def _tex_escape(s: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}", "α": r"$\alpha$", "β": r"$\beta$", "√": r"$\sqrt{}$",
            "≤": r"$\le$", "≥": r"$\ge$", "×": r"$\times$", "—": "---", "–": "--"}
    return "".join(repl.get(c, c) for c in str(s))


def table_markdown(df, caption: str | None = None) -> str:
    cols = [str(c) for c in df.columns]
    lines = []
    if caption:
        lines += [f"*{caption}*", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def table_latex(df, caption: str, label: str) -> str:
    cols = [str(c) for c in df.columns]
    spec = "l" * len(cols)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex_escape(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(_tex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(df, md_path, tex_path, caption: str, label: str) -> None:
    """One table in Markdown and in LaTeX (booktabs)."""
    atomic_write_text(md_path, table_markdown(df, caption))
    atomic_write_text(tex_path, table_latex(df, caption, label))


def fmt(x, nd: int = 3) -> str:
    """A number for a table: integers as integers, floats with ``nd`` decimals, NaN as '—'."""
    if x is None:
        return "—"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(xf):
        return "—"
    if math.isinf(xf):
        return "∞"
    if xf == int(xf) and abs(xf) < 1e15 and nd == 0:
        return str(int(xf))
    return f"{xf:.{nd}f}"


# -- running under Snakemake -------------------------------------------------------------------

def start(smk) -> float:
    """Send this script's stdout and stderr to the rule's log file; return the start time."""
    if smk is not None and len(smk.log):
        Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
        fh = open(smk.log[0], "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        sys.stdout = sys.stderr = fh
    return time.time()


def finish(smk, started: float, script: str, csvs=()) -> None:
    """Write ``<csv>.meta.json`` (provenance) next to every CSV in ``csvs``."""
    prov = provenance(smk, started, script)
    for csv in csvs:
        write_json(prov, str(csv)[: -len(".csv")] + ".meta.json")
    print(f"done in {prov['wall_s']} s", flush=True)
