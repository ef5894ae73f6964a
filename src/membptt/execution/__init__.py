"""Executing plans on real PyTorch step functions: :func:`bptt` and :func:`probe`."""

from .executor import ExecStats, bptt, compile_plan, plain_bptt
from .probe import StepReport, measure_step, probe

__all__ = ["bptt", "probe", "measure_step", "StepReport", "ExecStats", "compile_plan",
           "plain_bptt"]
