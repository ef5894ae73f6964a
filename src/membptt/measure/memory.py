"""Peak memory of one iteration: the live-tensor tracker (any device) and CUDA's allocator."""

from __future__ import annotations

import gc

import torch

from .tracker import LiveBytesTracker

__all__ = ["tracked_peak", "cuda_peak"]


def tracked_peak(fn, device=None) -> tuple[int, int, object]:
    """Peak live tensor bytes allocated by ``fn()`` above the pre-call baseline.

    Returns ``(peak_bytes, bytes still live at the end, fn's result)``. The caller sets
    parameter gradients to ``None`` first, so the gradients the iteration creates are part of
    the peak (as in training with ``zero_grad(set_to_none=True)``).
    """
    gc.collect()
    with LiveBytesTracker() as tr:
        out = fn()
    return tr.peak_bytes, tr.current_bytes, out


def cuda_peak(fn, device) -> tuple[int, object]:
    """``torch.cuda.max_memory_allocated`` during ``fn()`` minus the allocation before it."""
    dev = torch.device(device)
    gc.collect()
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    out = fn()
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) - base, out
