"""Process RSS high-water mark of one iteration, measured in a fresh subprocess.

What the operating system saw, as a complement to the tensor-level tracker: allocator caches,
fragmentation, scratch buffers inside kernels and library workspaces all count here.

Protocol: :func:`measure_rss` starts ``python -m membptt.measure.rss`` with a JSON job
(workload config, method name, options). The child builds the workload, prepares the method
(planning, probing), collects garbage, reads its current RSS (``rss_baseline_bytes``), resets
the kernel's high-water mark (writing ``5`` to ``/proc/self/clear_refs``), runs one iteration
and reads ``VmHWM`` (``rss_peak_bytes``). The iteration's RSS cost is the difference.

There is deliberately no warm-up iteration before the baseline: glibc's ``malloc`` keeps much
of what an iteration freed (its mmap threshold grows after large frees), so after a warm-up
the baseline already contains the iteration's peak and the difference reads ~0. The first
iteration also pays one-time initialisations (small next to activations at realistic sizes).
Where the reset is not permitted, the high-water mark is the whole process's
(``rss_hwm_reset`` false). Linux only (``/proc``); elsewhere the columns stay empty.

The child never outlives the benchmark: it asks the kernel to SIGKILL it when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), and exits at once if the parent died before it could ask
(:func:`die_with_parent`); an exception in the parent (Ctrl-C) kills it through
``subprocess.run``.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys

__all__ = ["measure_rss", "read_status_bytes"]


def read_status_bytes(field: str) -> int | None:
    """``VmRSS``/``VmHWM``... of this process in bytes, from ``/proc/self/status``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_rss(job: dict, timeout: float = 3600.0) -> dict:
    """Run ``job`` in a fresh interpreter; return its result dict (see module docstring)."""
    if not os.path.exists("/proc/self/status"):
        return {"status": "unsupported"}
    env = dict(os.environ)
    env[_PARENT_ENV] = str(os.getpid())
    r = subprocess.run([sys.executable, "-m", "membptt.measure.rss", json.dumps(job)],
                       capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        return {"status": "error", "message": " | ".join(tail)}
    return json.loads(lines[-1])


_PARENT_ENV = "MEMBPTT_RSS_PARENT"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> bool:
    """Make this process die with its parent (Linux; returns whether the kernel took it).

    ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills this process when the thread that
    started it exits. If the parent (``$MEMBPTT_RSS_PARENT``) is already gone, exit now.
    """
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    parent = os.environ.get(_PARENT_ENV)
    if parent and parent.isdigit() and os.getppid() != int(parent):
        os._exit(1)  # orphaned before prctl took effect
    return armed


def _child(job: dict) -> dict:
    import torch

    from .methods import make_method
    from .workload import WorkloadConfig, make_workload

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    w = make_workload(WorkloadConfig(**job["workload"]))
    m = make_method(job["method"], w, job.get("options") or {})
    m.prepare()
    w.zero_grad()
    gc.collect()
    base = read_status_bytes("VmRSS")
    reset = _reset_hwm()
    m.run()
    peak = read_status_bytes("VmHWM")
    return {"status": "ok", "rss_peak_bytes": peak, "rss_baseline_bytes": base,
            "rss_hwm_reset": reset}


if __name__ == "__main__":
    die_with_parent()
    print(json.dumps(_child(json.loads(sys.argv[1]))), flush=True)
