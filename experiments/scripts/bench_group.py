"""One comparison group: `membptt bench` with every method of the group in one process.

The methods are timed interleaved, round by round, and every row carries the per-round time
ratio to the group's baseline (docs/results-schema.md). The command is an argument list (no
shell), so no path or config value is ever interpreted by a shell; values are passed as
``--option=value``, so a value that starts with ``-`` (an ``outdir`` of ``-x``) is never read
as an option.

Around the measurement:

* the pipeline's measuring lock is held exclusively (``measure_lock.py``): no other job of any
  Snakemake run in this folder computes while the group is timed;
* the group dies with Snakemake: ``membptt bench`` gets ``SIGTERM`` when this script dies
  (``prctl(PR_SET_PDEATHSIG)`` on Linux), and a watcher thread ends both when the Snakemake
  process that started the job is gone (``kill -9`` of Snakemake alone), so no orphan goes on
  measuring beside a resumed run;
* a group with no ``ok`` row fails the job (every method out of memory or infeasible: there is
  nothing to plot), after ``membptt bench`` wrote the rows (the log has the table).
"""

import csv
import os
import signal
import subprocess
import sys
import threading
import time

from measure_lock import hold
from pipeline_common import start

PR_SET_PDEATHSIG = 1


def _set_death_signal(sig=signal.SIGTERM) -> None:
    """In the child, before exec: get ``sig`` when the parent (this script) dies."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of ``pid`` from /proc, or None when it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), fields[19]


def _is_snakemake(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return False
    return any(os.path.basename(a) == "snakemake" for a in argv[:2]) or (
        "-m" in argv[:3] and "snakemake" in argv[:4])


def snakemake_ancestor() -> tuple[int, str] | None:
    """(pid, start time) of the nearest ancestor that is Snakemake (between it and this script
    there may be a shell), else of the parent; None without /proc."""
    pid = os.getppid()
    first = None
    for _ in range(8):
        st = _stat(pid)
        if st is None:
            break
        if first is None:
            first = (pid, st[1])
        if _is_snakemake(pid):
            return pid, st[1]
        if st[0] <= 1:
            break
        pid = st[0]
    return first


def watch(ancestor, child: subprocess.Popen, gone: threading.Event, poll_s: float = 0.5):
    """End ``child`` (SIGTERM, SIGKILL after 10 s) when ``ancestor`` is gone."""
    pid, started = ancestor
    while child.poll() is None:
        st = _stat(pid)
        if st is None or st[1] != started:
            gone.set()
            print(f"[bench_group] Snakemake (pid {pid}) is gone: stopping the measurement",
                  flush=True)
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
            return
        time.sleep(poll_s)


def no_ok_row(path) -> str | None:
    """Why the group has nothing to show (no row with status ok), or None."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if any(r.get("status") == "ok" for r in rows):
        return None
    return "; ".join(f"{r.get('label') or r.get('method')}: {r.get('status')} "
                     f"{(r.get('message') or '')[:300]}".strip() for r in rows) or "no rows"


def main(smk):
    start(smk)
    p = smk.params
    cmd = [p.membptt, "bench", f"--method={','.join(p.methods)}", f"--seq-len={p.seq_len}",
           f"--baseline={p.baseline}", f"--group={p.group}", *p.args,
           f"--out={smk.output.csv}"]
    print(" ".join(cmd), flush=True)
    ancestor = snakemake_ancestor()
    gone = threading.Event()
    with hold("exclusive", f"group {p.group}", log=lambda m: print(m, flush=True)):
        child = subprocess.Popen(cmd, stdout=sys.stdout, stderr=sys.stderr,
                                 preexec_fn=_set_death_signal)
        if ancestor is not None:
            threading.Thread(target=watch, args=(ancestor, child, gone), daemon=True).start()
        try:
            rc = child.wait()
        except BaseException:
            child.terminate()
            raise
    if gone.is_set():
        raise SystemExit("bench_group: Snakemake is gone; the measurement was stopped")
    if rc:
        raise SystemExit(rc)
    why = no_ok_row(smk.output.csv)
    if why is not None:
        raise SystemExit(f"bench_group: group {p.group} has no ok row, nothing to show "
                         f"(check the sizes in the config): {why}")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
