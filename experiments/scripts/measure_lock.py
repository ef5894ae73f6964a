"""One lock per pipeline folder, so that no measurement is timed beside other pipeline work.

Snakemake's own lock refuses two runs only when their outputs overlap: `snakemake measured`
and `snakemake theory` in one folder run at once, and the comparison groups would be timed
under the theory jobs' load. So every measuring job (``bench_group.py``) holds this lock
*exclusively* while it measures, and every CPU-heavy job that does not measure (the theory
scripts) holds it *shared*: a group waits until no other job of any run in the folder is
computing, and nothing else starts while a group measures. Within one run nothing changes (a
group asks for all of Snakemake's cores, so it already runs alone).

The lock is ``flock(2)`` on ``.snakemake/membptt-measure.lock`` in the working directory
(Snakemake's ``--directory``): it is released by the kernel when its holder exits, however it
exits (SIGKILL included), so it can never go stale. It is not taken under Slurm
(``SLURM_JOB_ID`` set): each job has its own allocation there, and a lock on a shared file
system would serialise the cluster. A job that waits says so in its log, with the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time

LOCK_PATH = os.path.join(".snakemake", "membptt-measure.lock")


def _enabled() -> bool:
    return not os.environ.get("SLURM_JOB_ID")


@contextlib.contextmanager
def hold(kind: str, what: str, log=print, path: str = LOCK_PATH, poll_s: float = 1.0):
    """Hold the pipeline's lock, ``kind`` ``"exclusive"`` (measuring) or ``"shared"``; wait
    for it, saying so once in ``log``. Yields the seconds waited."""
    if kind not in ("exclusive", "shared"):
        raise ValueError(f"kind must be 'exclusive' or 'shared', got {kind!r}")
    if not _enabled():
        yield 0.0
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    op = fcntl.LOCK_EX if kind == "exclusive" else fcntl.LOCK_SH
    started = time.monotonic()
    try:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            log(f"[lock] {what}: waiting for the pipeline's measuring lock {path} "
                f"({kind}; another job of this folder holds it"
                + (f"; the last measuring job: {holder}" if holder else "") + ")")
            while True:
                try:
                    fcntl.flock(fd, op | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(poll_s)
            log(f"[lock] {what}: got the lock after {time.monotonic() - started:.1f} s")
        waited = time.monotonic() - started
        if kind == "exclusive":  # who holds it, for the log of a job that waits
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{what} (pid {os.getpid()} on {socket.gethostname()})"
                          .encode(), 0)
        yield waited
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _holder(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(200).strip()
    except OSError:
        return ""
