"""Tidy result rows: the CSV schema, provenance and atomic writes.

The schema (column order) is :data:`COLUMNS`; ``docs/results-schema.md`` documents every column.
A row is a dict; missing columns are written empty. Files are written to a temporary file in
the target directory and renamed over the target (``os.replace``), so an interrupted run never
leaves a half-written CSV.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["COLUMNS", "provenance", "write_rows", "read_rows", "atomic_write_text", "cpu_model",
           "git"]

COLUMNS: tuple[str, ...] = (
    # what was run
    "method", "label", "strategy", "cost_model", "params", "exact",
    "model", "seq_len", "hidden", "input_size", "classes", "batch", "dtype", "seed",
    "alpha", "beta", "budget_requested", "budget_units", "budget_bytes",
    "forward_ops", "backward_ops", "graph_forwards",
    # predictions (plan methods)
    "predicted_peak_units", "predicted_peak_bytes", "working_set_bytes", "predicted_cost",
    "predicted_time_s",
    "hidden_bytes", "internal_bytes", "beta_bytes",
    "probe_run_fixed_s", "probe_run_per_step_s", "probe_forward_graph_s", "probe_backward_s",
    # time
    "time_median_s", "time_iqr_s", "time_q1_s", "time_q3_s", "time_min_s", "repeats", "warmup",
    "time_samples_s",
    # the comparison group (one process, interleaved rounds) and per-round ratios to its baseline
    "group", "group_baseline", "ratio_median", "ratio_q1", "ratio_q3", "ratio_samples",
    # memory
    "peak_bytes", "grad_bytes", "param_bytes", "cuda_peak_bytes", "rss_peak_bytes",
    "rss_baseline_bytes",
    # correctness
    "loss", "grad_error",
    # outcome
    "status", "message",
    # provenance
    "device", "device_model", "threads", "torch_version", "package_version", "python_version",
    "git_commit", "git_dirty", "hostname", "timestamp", "command",
)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git(args: list[str]) -> str | None:
    """``git <args>`` in this package's checkout; its stdout, or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        # no optional locks: `git status` must never leave an index.lock behind when the
        # process measuring is killed (a killed run must not break the checkout)
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
        r = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                           timeout=10, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def provenance(device: str = "cpu", argv: list[str] | None = None) -> dict:
    """Columns that say where, when, with what and how a row was produced."""
    import torch

    import membptt

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        model = torch.cuda.get_device_name(dev)
    else:
        model = cpu_model()
    commit = git(["rev-parse", "HEAD"]) or "unknown"
    status = git(["status", "--porcelain", "--untracked-files=no"])
    argv = sys.argv if argv is None else argv
    return {
        "device": str(dev),
        "device_model": model,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "package_version": getattr(membptt, "__version__", "unknown"),
        "python_version": platform.python_version(),
        "git_commit": commit,
        "git_dirty": "" if status is None else str(bool(status)).lower(),
        "hostname": socket.gethostname(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(argv),
    }


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file in the same directory, flushed
    and fsynced, then renamed over the target. The one atomic writer of the project (the
    pipeline's scripts use it too: ``experiments/scripts/pipeline_common.py``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_rows(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write ``rows`` to ``path`` atomically (:func:`atomic_write_text`).

    Unknown keys raise ``KeyError`` (the schema is the contract with the pipeline).
    """
    for r in rows:
        extra = set(r) - set(COLUMNS)
        if extra:
            raise KeyError(f"row has columns not in the schema: {sorted(extra)}")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in COLUMNS])
    return atomic_write_text(path, buf.getvalue())


def read_rows(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
