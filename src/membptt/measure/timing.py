"""Wall-clock timing of one training iteration: warm-up, n repeats, median and IQR.

Why not ``torch.utils.benchmark.Timer``: its ``blocked_autorange`` is built for micro-benchmarks
(it chooses how many calls to put in one measurement block and reports per-call means of blocks).
One BPTT iteration takes from milliseconds to seconds, has to be preceded by
``zero_grad(set_to_none=True)`` outside the timed region, and several methods must be
*interleaved* (round-robin, one iteration of each per round) so that slow drifts of a shared
machine (frequency scaling, a neighbour process) hit every method alike. So each iteration is
timed on its own with :func:`time.perf_counter`, with ``torch.cuda.synchronize()`` before the
start and before the stop on CUDA (the same thing ``Timer`` does), and the statistics are the
median and the interquartile range over the repeats (robust to the occasional outlier).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["TimingResult", "time_interleaved", "time_once", "summarize", "sync"]


def sync(device: torch.device | str | None) -> None:
    """Wait for queued kernels on ``device`` (no-op on CPU)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_once(fn: Callable[[], object], device=None, before: Callable[[], object] | None = None):
    """Time one call of ``fn`` in seconds; ``before`` runs untimed just ahead of it."""
    if before is not None:
        before()
    sync(device)
    enabled = gc.isenabled()
    gc.disable()  # as timeit does: no collector pause inside the timed region
    try:
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0
    finally:
        if enabled:
            gc.enable()


@dataclass
class TimingResult:
    samples: list[float] = field(default_factory=list)
    warmup: int = 0

    @property
    def repeats(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def q1(self) -> float:
        return _quantile(self.samples, 0.25)

    @property
    def q3(self) -> float:
        return _quantile(self.samples, 0.75)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def min(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    def as_row(self) -> dict:
        return {
            "time_median_s": self.median,
            "time_iqr_s": self.iqr,
            "time_q1_s": self.q1,
            "time_q3_s": self.q3,
            "time_min_s": self.min,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "time_samples_s": " ".join(f"{s:.6g}" for s in self.samples),
        }


def _quantile(xs: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), ``nan`` for no samples."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(samples: list[float], warmup: int = 0) -> TimingResult:
    return TimingResult(list(samples), warmup)


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    repeats: int = 5,
    warmup: int = 1,
    device=None,
    before: Callable[[], object] | None = None,
) -> dict[str, TimingResult]:
    """Time several callables round-robin: ``warmup`` untimed rounds, then ``repeats`` rounds.

    Each round calls every function once, in the given order (rotated by one each round, so no
    method always runs right after the same neighbour). ``before`` runs untimed before every
    call (e.g. ``zero_grad``). Returns one :class:`TimingResult` per name.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            time_once(fns[n], device, before)
    out = {n: TimingResult(warmup=warmup) for n in names}
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            out[n].samples.append(time_once(fns[n], device, before))
    return out
