"""Executing plans on real PyTorch step functions: :func:`bptt` and :func:`probe`."""

from .compile import Program, compile_plan
from .executor import ExecStats, Executor, Record, bptt, compiled, plain_bptt
from .probe import ProtocolError, StepReport, measure_step, probe, working_set_bytes
from .tune import tune
from .wrap import WrappedRNN, scan, wrap

__all__ = ["bptt", "probe", "measure_step", "StepReport", "ExecStats", "Executor", "Record",
           "Program", "ProtocolError", "compile_plan", "compiled", "plain_bptt",
           "working_set_bytes", "wrap", "scan", "WrappedRNN", "tune"]
