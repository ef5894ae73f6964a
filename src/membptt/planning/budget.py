"""Memory budgets: hidden-state units, bytes ("512MiB") or a fraction of full-cache memory ("5%").

The planners count memory in hidden-state units (PAPER.md). A budget is resolved to units:

* an integer (or an integer string such as ``"250"``): units, as given;
* bytes (``"512MiB"``, ``"1.5GB"``, ``"4096B"``): needs state sizes (``CostModel.hidden_bytes``);
  ``units = floor(bytes / hidden_bytes)``, plus one when the strategy counts the initial state
  ``h_0`` in its budget (HSM, MSM and the baselines do; ISM does not): ``h_0`` is the caller's
  tensor, already in memory, so the byte budget is for what the plan stores beyond it;
* a percentage of the *full-cache memory*, the memory standard BPTT holds: ``T`` internal
  states. With sizes, that is ``T * internal_bytes`` and the byte rule above applies; without,
  it is ``alpha * T`` units and ``units = floor(fraction * alpha * T)``.

The resolved :class:`Budget` records what was asked, the units used and how they were rounded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_BYTES_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?i?[bB])\s*$")
_PCT_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*%\s*$")
_INT_RE = re.compile(r"^\s*([0-9]+)\s*$")
VALID_FORMS = ("an integer number of hidden-state units (e.g. 250), bytes with a suffix "
               "B/kB/MB/GB/KiB/MiB/GiB (e.g. '512MiB'), or a percentage of the full-cache "
               "memory (e.g. '5%')")


@dataclass(frozen=True)
class Budget:
    requested: str  # what the caller gave, as text
    kind: str  # "units", "bytes" or "fraction"
    units: int  # hidden-state units handed to the planner
    bytes: int | None  # the byte budget, when given as bytes or derivable from sizes
    note: str  # how the units were obtained (rounding)

    def to_dict(self) -> dict:
        return {"requested": self.requested, "kind": self.kind, "units": self.units,
                "bytes": self.bytes, "note": self.note}


def _finite(memory, value: float) -> float:
    if not math.isfinite(value):  # '1e400%' parses to inf
        raise ValueError(f"memory budget {memory!r} is not a finite number; give {VALID_FORMS}")
    return value


def parse_memory(memory) -> tuple[str, float]:
    """Classify a budget: ("units", n) / ("bytes", n) / ("fraction", f). Raises ValueError."""
    if isinstance(memory, bool):
        raise ValueError(f"memory budget {memory!r} is not valid: give {VALID_FORMS}")
    if isinstance(memory, int):
        return "units", memory
    if isinstance(memory, float):
        if not math.isfinite(memory) or memory != int(memory):
            raise ValueError(f"memory budget {memory!r} in units must be a whole number; "
                             f"give {VALID_FORMS}")
        return "units", int(memory)
    if isinstance(memory, str):
        if m := _INT_RE.match(memory):
            return "units", int(m.group(1))
        if m := _PCT_RE.match(memory):
            return "fraction", _finite(memory, float(m.group(1)) / 100.0)
        if m := _BYTES_RE.match(memory):
            suffix = m.group(2).lower()
            if suffix in _UNITS:
                return "bytes", _finite(memory, float(m.group(1)) * _UNITS[suffix])
    raise ValueError(f"memory budget {memory!r} is not valid: give {VALID_FORMS}")


def resolve(memory, *, seq_len: int, alpha: int | None, hidden_bytes: int | None,
            internal_bytes: int | None, count_initial: bool) -> Budget:
    """Resolve ``memory`` to a :class:`Budget` in hidden-state units (see module docstring)."""
    kind, value = parse_memory(memory)
    text = str(memory)
    if kind == "units":
        if value < 0:
            raise ValueError(f"memory budget {memory!r} is negative; give a number of units >= 1")
        b = value * hidden_bytes if hidden_bytes else None
        return Budget(text, kind, int(value), b, "as given")
    if value <= 0:
        raise ValueError(f"memory budget {memory!r} must be positive; give {VALID_FORMS}")
    if kind == "fraction":
        if hidden_bytes and internal_bytes:
            nbytes = value * seq_len * internal_bytes
            note = f"{value:.6g} x full-cache memory ({seq_len} x {internal_bytes} B) = {nbytes:.0f} B; "
        else:
            if alpha is None:
                raise ValueError(
                    f"memory budget {memory!r} is a fraction of the full-cache memory "
                    "(T internal states), which needs alpha (internal-state size in "
                    "hidden-state units) or a CostModel with state sizes")
            exact = value * alpha * seq_len
            units = math.floor(exact + 1e-9)
            return Budget(text, kind, units, None,
                          f"{value:.6g} x full-cache memory ({seq_len} x alpha={alpha} units) "
                          f"= {exact:.6g} -> {units} units (rounded down)")
    else:
        nbytes = value
        note = ""
    if not hidden_bytes:
        raise ValueError(
            f"memory budget {memory!r} is in bytes, which needs state sizes: pass "
            "costs=membptt.probe(step, state0, inputs) or CostModel(hidden_bytes=..., "
            "internal_bytes=...)")
    units = math.floor(nbytes / hidden_bytes + 1e-9) + (1 if count_initial else 0)
    note += (f"floor({nbytes:.0f} B / {hidden_bytes} B per hidden state)"
             + (" + 1 (the initial state h_0, already in memory)" if count_initial else "")
             + f" = {units} units")
    return Budget(text, kind, units, int(nbytes), note)
