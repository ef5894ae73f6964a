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
import errno
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
           "save_fallback", "rows_csv",
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


def _tmp_prefix(name: str) -> str:
    """The prefix of a temporary file beside ``name``: short enough for any file system (a
    name near the 255-byte limit plus a random part and a suffix would exceed it)."""
    return f".{name}." if len(os.fsencode(name)) <= 100 else ".membptt-out."


_FS_IMMUTABLE, _FS_APPEND = 0x10, 0x20  # FS_IMMUTABLE_FL, FS_APPEND_FL (linux/fs.h)


def _file_flags(path: Path) -> int:
    """The inode flags of ``path`` (``FS_IOC_GETFLAGS``), 0 where they cannot be read."""
    if sys.platform != "linux":
        return 0
    import array
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return 0
    try:
        buf = array.array("l", [0])
        fcntl.ioctl(fd, 0x80086601, buf, True)  # FS_IOC_GETFLAGS
        return int(buf[0])
    except OSError:
        return 0
    finally:
        os.close(fd)


def _cannot_replace(target: Path, st: os.stat_result) -> str | None:
    """Why an existing regular file cannot be renamed over (None when it can): an immutable or
    append-only file, or a file of another user in a sticky directory (``/tmp``) that this
    process does not own either (``rename`` then fails with ``EPERM`` after measuring)."""
    flags = _file_flags(target)
    if flags & _FS_IMMUTABLE:
        return "it is immutable (chattr +i)"
    if flags & _FS_APPEND:
        return "it is append-only (chattr +a)"
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    if euid is None or euid == 0:
        return None
    try:
        pst = os.stat(target.parent)
    except OSError:
        return None
    if pst.st_mode & stat.S_ISVTX and euid not in (st.st_uid, pst.st_uid):
        return (f"it belongs to uid {st.st_uid} in the sticky directory "
                f"{str(target.parent)!r}, where only its owner may replace it")
    return None


def check_output_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` can take an atomic write; return the path to replace.

    Refuses (``ValueError``, one line) an empty path; a path that names a directory (a
    trailing ``/``, a last component ``.`` or ``..``); a name longer than the file system
    allows; a symbolic link that loops; an existing path that is not a regular file; an
    existing file that cannot be renamed over (immutable, append-only, another user's file in
    a sticky directory); and a directory where no file can be created (tried with a temporary
    file, removed at once). Creates missing parent directories. Follows a symbolic link to its
    target.
    """
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise ValueError(f"output path {path!r} is empty or not a path; give a file name such "
                         "as results/points/p.csv")
    text = os.fspath(path)
    text = os.fsdecode(text) if isinstance(text, bytes) else text
    if text.endswith(("/", os.sep)) or os.path.basename(text) in (".", ".."):
        raise ValueError(f"output path {text!r} names a directory; give a file name such as "
                         f"{os.path.join(text.rstrip('/') or '.', 'p.csv')!r}")
    target = Path(text)
    try:
        name_max = os.pathconf(".", "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    for part in target.parts:
        if len(os.fsencode(part)) > name_max:
            raise ValueError(f"output path {text!r}: the name {part[:40]!r}... is "
                             f"{len(os.fsencode(part))} bytes, above the file system's limit "
                             f"of {name_max} bytes per name")
    try:
        if target.is_symlink():
            try:
                target = Path(os.path.realpath(target, strict=True))
            except FileNotFoundError:  # a dangling link: its target is created
                target = Path(os.path.realpath(target))
    except (OSError, RuntimeError) as e:
        why = ("a symbolic link that loops" if "loop" in str(e).lower()
               or getattr(e, "errno", None) == errno.ELOOP
               else f"a path that cannot be followed ({e.strerror or e})"
               if isinstance(e, OSError) else f"a path that cannot be followed ({e})")
        raise ValueError(f"output path {text!r} is {why}; give a regular file or a new "
                         "path") from None
    for part in target.parts:
        if len(os.fsencode(part)) > name_max:
            raise ValueError(f"output path {text!r}: the name {part[:40]!r}... is "
                             f"{len(os.fsencode(part))} bytes, above the file system's limit "
                             f"of {name_max} bytes per name")
    st = _refuse_special(target)
    if st is not None:
        why = _cannot_replace(target, st)
        if why:
            raise ValueError(f"output path {text!r} cannot be replaced: {why}; give another "
                             "path")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_tmp_prefix(target.name), suffix=".probe",
                                     dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"output path {text!r}: cannot create files in {str(parent)!r}: "
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
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
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
    return atomic_write_text(path, rows_csv(rows))


def rows_csv(rows: list[dict]) -> str:
    """The CSV text of ``rows`` (header :data:`COLUMNS`), as :func:`write_rows` writes it."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in COLUMNS])
    return buf.getvalue()


def save_fallback(path: str | os.PathLike, rows: list[dict]) -> str | None:
    """Save ``rows`` that could not be written to ``path``; return the file written, or None.

    Tried in order: a new file next to the target (``<stem>.unsaved-<UTC time>-<pid><suffix>``)
    and the same name in the temporary directory (``$TMPDIR``, ``/tmp``); each is written
    atomically (:func:`atomic_write_text`), and the target itself is never touched. None when
    no file can be written at all (a full disk, ``ulimit -f``): the caller prints the CSV text
    (:func:`rows_csv`) on stderr instead.
    """
    target = Path(os.fspath(path))
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem, suffix = target.stem or "rows", target.suffix or ".csv"
    if len(os.fsencode(stem)) > 150 or len(os.fsencode(suffix)) > 20:
        stem, suffix = "membptt-rows", ".csv"
    name = f"{stem}.unsaved-{stamp}-{os.getpid()}{suffix}"
    text = rows_csv(rows)
    for where in (target.parent, Path(tempfile.gettempdir())):
        try:
            return str(atomic_write_text(where / name, text))
        except (OSError, ValueError):
            continue
    return None


def read_rows(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
