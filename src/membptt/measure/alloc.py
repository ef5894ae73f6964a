"""Process-wide CPU allocator settings for benchmarks: :func:`keep_freed_memory`.

PyTorch's CPU tensors come from the C library's ``malloc``. With glibc's defaults, large blocks
are served by ``mmap`` and freed memory at the top of the heap is returned to the system once
more than ``M_TRIM_THRESHOLD`` bytes are free; the next allocation then page-faults fresh,
zeroed pages. Backpropagation frees and reallocates many megabytes per step, and a plan that
backpropagates in several calls (one per chain of stored steps) returns memory to the system
between calls. The PyTorch CPU performance guide recommends a caching allocator (jemalloc,
tcmalloc) for this reason. On this project's 2-core CPU the effect on backward time could not
be told apart from the machine's noise between processes (docs/executor-speed.md); the option
exists so that it can be measured elsewhere.

:func:`keep_freed_memory` makes glibc keep freed memory for reuse (no trimming, no ``mmap``
for large blocks). It changes the whole process, for every later allocation, and cannot be
undone: benchmarks apply it before anything is measured, to every method alike, and say so.
Peak *live tensor bytes* (what membptt's tracker counts) do not change; the process's resident
set stays at its high-water mark instead of shrinking.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_MAX_MMAP_THRESHOLD = 32 * 2**20  # glibc caps M_MMAP_THRESHOLD at 32 MiB on 64-bit


def keep_freed_memory() -> str:
    """Ask glibc ``malloc`` to keep freed memory (see the module docstring).

    Returns a one-line description of what was set. Raises ``RuntimeError`` where the C
    library is not glibc (the settings do not exist there).
    """
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"keep_freed_memory needs glibc on Linux; this is {sys.platform}")
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        raise RuntimeError(f"keep_freed_memory needs glibc's mallopt; {name}: {e}") from e
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim = 2**31 - 1
    ok = mallopt(M_TRIM_THRESHOLD, trim) == 1 and mallopt(M_MMAP_THRESHOLD,
                                                           _MAX_MMAP_THRESHOLD) == 1
    if not ok:
        raise RuntimeError("glibc mallopt rejected M_TRIM_THRESHOLD / M_MMAP_THRESHOLD")
    return (f"glibc malloc: M_TRIM_THRESHOLD={trim} (never trim), "
            f"M_MMAP_THRESHOLD={_MAX_MMAP_THRESHOLD} (blocks up to 32 MiB from the heap)")
