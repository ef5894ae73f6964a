"""Measurement: live tensor bytes, CUDA peaks, RSS, timing and the benchmark methods.

* :class:`LiveBytesTracker` -- peak live tensor bytes (sees autograd's saved tensors and the
  backward's temporaries), any device;
* :func:`cuda_peak` -- ``torch.cuda.max_memory_allocated`` above the baseline;
* :func:`measure_rss` -- RSS high-water mark of one iteration in a fresh subprocess;
* :func:`time_interleaved` -- warm-up, n repeats, median and IQR, several methods interleaved;
* :data:`METHODS` -- the benchmark methods (one class and one registry line each);
* :func:`run_point` / ``membptt bench`` -- one measured point, written as tidy CSV rows
  (schema: :data:`COLUMNS`, ``docs/results-schema.md``).
"""

from .bench import BenchConfig, grad_error, run_point
from .memory import cuda_peak, tracked_peak
from .methods import (
    METHODS,
    Infeasible,
    Method,
    get_method,
    iteration_working_bytes,
    make_method,
    parse_method_spec,
    probe_report,
)
from .results import COLUMNS, provenance, read_rows, write_rows
from .rss import measure_rss
from .timing import TimingResult, time_interleaved
from .tracker import LiveBytesTracker, track_peak
from .workload import Workload, WorkloadConfig, make_workload

__all__ = [
    "BenchConfig", "COLUMNS", "Infeasible", "LiveBytesTracker", "METHODS", "Method",
    "TimingResult", "Workload", "WorkloadConfig", "cuda_peak", "get_method", "grad_error",
    "make_method", "make_workload", "measure_rss", "parse_method_spec", "probe_report", "provenance", "read_rows", "run_point",
    "time_interleaved", "track_peak", "tracked_peak", "iteration_working_bytes", "write_rows",
]
