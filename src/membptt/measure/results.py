"""Tidy result rows: the CSV schema, provenance and atomic writes.

The schema (column order) is :data:`COLUMNS`; ``docs/results-schema.md`` documents every column.
A row is a dict; missing columns are written empty. Files are written to a temporary file in
the target directory and renamed over the target (``os.replace``), so an interrupted run never
leaves a half-written CSV. Only regular files are ever replaced: :func:`check_output_path`
refuses a directory, FIFO, device or socket (and a place where no file can be created), and
``membptt bench`` calls it before measuring. A symbolic link is followed (its target is
replaced, the link stays). The new file gets the mode of the file it replaces, or
``0o666 & ~umask`` (not ``mkstemp``'s 0600).
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
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["COLUMNS", "check_output_path", "provenance", "write_rows", "read_rows",
           "atomic_write_text", "cpu_model", "git"]

COLUMNS: tuple[str, ...] = (
    # what was run
    "method", "label", "strategy", "cost_model", "params", "exact",
    "model", "seq_len", "hidden", "input_size", "classes", "batch", "dtype", "seed",
    "alpha", "beta", "budget_requested", "budget_units", "budget_bytes",
    "forward_ops", "backward_ops", "graph_forwards",
    # predictions (plan methods)
    "predicted_peak_units", "predicted_peak_bytes", "working_set_bytes",
    "predicted_total_peak_bytes", "planner", "block", "predicted_cost",
    "predicted_time_s",
    "hidden_bytes", "internal_bytes", "beta_bytes",
    "probe_run_fixed_s", "probe_run_per_step_s", "probe_forward_graph_s", "probe_backward_s",
    # a reversible model's information buffer (method reversible)
    "buffer_bits_allocated", "buffer_bits_stored", "buffer_bits_optimal", "buffer_bytes",
    "state_units",
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


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _refuse_special(path: Path) -> os.stat_result | None:
    """The stat of ``path`` if it is a regular file, None if it does not exist; else raise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"output path {str(path)!r} cannot be examined: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
        raise ValueError(f"output path {str(path)!r} is {kind}; give a regular file or a new "
                         "path (results are written atomically: a special file would be "
                         "replaced)")
    return st


def check_output_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` can take an atomic write; return the path to replace.

    Refuses (``ValueError``) an empty path, an existing path that is not a regular file, and a
    directory where no file can be created (tried with a temporary file, removed at once);
    creates missing parent directories. Follows a symbolic link to its target.
    """
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise ValueError(f"output path {path!r} is empty or not a path; give a file name such "
                         "as results/points/p.csv")
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    _refuse_special(target)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"output path {str(path)!r}: cannot create files in {str(parent)!r}: "
                         f"{e.strerror or e}") from None
    return target


def _new_file_mode(existing: os.stat_result | None) -> int:
    if existing is not None:
        return stat.S_IMODE(existing.st_mode)
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file in the same directory, flushed
    and fsynced, then renamed over the target. The one atomic writer of the project (the
    pipeline's scripts use it too: ``experiments/scripts/pipeline_common.py``). An output path
    that is not a regular file (a FIFO, a device, a directory) raises ``ValueError`` before
    anything is written (:func:`check_output_path`), and again just before the rename; a new
    file gets ``0666 & ~umask``, a replaced one keeps its mode. Returns the path written (a
    symbolic link's target)."""
    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), _new_file_mode(_refuse_special(path)))
            os.fsync(f.fileno())
        _refuse_special(path)  # checked again just before the rename: never replace a FIFO
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
