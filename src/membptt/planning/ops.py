"""The plan format: a flat list of primitive operations on one recurrent chain.

Steps are numbered 1..T. Step ``i`` maps the hidden state ``h_{i-1}`` to ``h_i`` (and the step's
loss). ``h_0`` is the initial state given by the user; it is always available.

Five primitives (``Forward`` carries the "keep" flavour):

``Forward(i, keep=None)``
    Run step ``i`` from ``h_{i-1}`` without an autograd graph and keep nothing but the running
    ("cursor") hidden state ``h_i``. Consecutive graph-free forwards form a *run*, which an
    executor may perform with a fused multi-step kernel.
``Forward(i, keep="hidden")``
    As above, and store ``h_i`` in memory (a checkpoint of the hidden state). Ends a run.
``Forward(i, keep="internal")``
    Run step ``i`` with its graph and store its internal state ``I_i`` (everything the backward of
    step ``i`` needs; it contains ``h_i``).
``Forward(i, keep="core")``
    Run step ``i`` with its graph into the *working core*: the internal state that is
    backpropagated by the very next operation. The core is not counted in the memory budget
    (the paper's accounting). Written ``F{i}(c)`` in the paper's traces.
``Backward(i)``
    Backpropagate step ``i``. Needs ``I_i`` (in the core or stored) and the gradient of ``h_i``,
    so backwards must come in the order T, T-1, ..., 1, each exactly once.
``Drop(i, kind)``
    Free the stored hidden (``kind="hidden"``) or internal (``kind="internal"``) state of step i.

A forward of step ``i`` reads ``h_{i-1}`` from the cursor (the previous operation was a forward
of step ``i-1``), from a stored hidden state, from a stored internal state (which contains its
output), or from ``h_0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Keep = Literal[None, "hidden", "internal", "core"]
KEEPS: tuple = (None, "hidden", "internal", "core")
STORED_KINDS: tuple = ("hidden", "internal")


@dataclass(frozen=True, slots=True)
class Forward:
    """Run step ``step`` (1-based) from ``h_{step-1}``; ``keep`` says what is retained."""

    step: int
    keep: Keep = None

    @property
    def graph(self) -> bool:
        """True when the step runs with its autograd graph (internal state or core)."""
        return self.keep in ("internal", "core")

    def __str__(self) -> str:
        suffix = {None: "", "hidden": "+h", "internal": "+I", "core": "(c)"}[self.keep]
        return f"F{self.step}{suffix}"


@dataclass(frozen=True, slots=True)
class Backward:
    """Backpropagate step ``step`` from its internal state (core or stored)."""

    step: int

    def __str__(self) -> str:
        return f"B{self.step}"


@dataclass(frozen=True, slots=True)
class Drop:
    """Free the stored ``kind`` ("hidden" or "internal") state of step ``step``."""

    step: int
    kind: Literal["hidden", "internal"]

    def __str__(self) -> str:
        return f"D{self.step}{'h' if self.kind == 'hidden' else 'I'}"


Op = Forward | Backward | Drop


def format_ops(ops, sep: str = " ") -> str:
    """Compact one-token-per-op form, e.g. ``F1+h F2 F3(c) B3 ...`` (parseable by parse_ops)."""
    return sep.join(str(op) for op in ops)


def parse_ops(text: str) -> list[Op]:
    """Inverse of :func:`format_ops`."""
    out: list[Op] = []
    for tok in text.split():
        try:
            if tok[0] == "F":
                for suffix, keep in (("+h", "hidden"), ("+I", "internal"), ("(c)", "core")):
                    if tok.endswith(suffix):
                        out.append(Forward(int(tok[1 : -len(suffix)]), keep))
                        break
                else:
                    out.append(Forward(int(tok[1:])))
            elif tok[0] == "B":
                out.append(Backward(int(tok[1:])))
            elif tok[0] == "D" and tok[-1] in "hI":
                out.append(Drop(int(tok[1:-1]), "hidden" if tok[-1] == "h" else "internal"))
            else:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(
                f"cannot parse plan token {tok!r}: expected F<i>, F<i>+h, F<i>+I, F<i>(c), "
                "B<i>, D<i>h or D<i>I"
            ) from None
    return out


def paper_trace(ops) -> str:
    """The execution order in the style of the paper's Fig. 3.

    ``F1 push h1 · F2 F3 F4 push h4 · ... · F8(c) B8 pop · ...``: a forward that stores its
    hidden (internal) state is followed by ``push h<i>`` (``push I<i>``), a core forward is
    ``F<i>(c)``, a freed state is ``pop``; `` · `` separates groups (before a forward that does
    not continue a run of plain forwards).
    """
    parts: list[str] = []
    prev = None
    for op in ops:
        if isinstance(op, Forward):
            if prev is not None and not (isinstance(prev, Forward) and prev.keep is None):
                parts.append("·")
            if op.keep is None:
                parts.append(f"F{op.step}")
            elif op.keep == "core":
                parts.append(f"F{op.step}(c)")
            else:
                parts.append(f"F{op.step} push {'h' if op.keep == 'hidden' else 'I'}{op.step}")
        elif isinstance(op, Backward):
            parts.append(f"B{op.step}")
        else:
            parts.append("pop")
        prev = op
    return " ".join(parts)
