"""Compile a plan's op list into the executor's program: named instructions, chains, segments.

A plan (``membptt.planning.ops``) says *what* to compute; a :class:`Program` says how the
executor runs it. Validity is checked in one place, the simulator
(:func:`membptt.planning.simulate_ops`); this module adds only what the executor itself
needs and then rewrites the ops into four kinds of instruction, each a frozen dataclass:

``Run(read, a, b, store)``
    graph-free forwards of steps ``a..b`` from ``h_{a-1}`` (one fused ``step.advance`` call, or a
    loop of ``step`` calls); ``store``: keep ``h_b`` as a stored hidden state.
``Graph(read, a, b, core, linked)``
    forwards *with graph* of steps ``a..b``: one ``step`` call when ``a == b``, one fused
    ``step.segment`` call otherwise. The record is stored as internal state ``b`` (or held as the
    working core when ``core``). ``linked``: step ``a`` reads ``h_{a-1}`` from the *graph outputs*
    of the record of step ``a-1`` (not a detached copy), so both belong to one autograd chain.
``Back(step, steps)``
    backpropagate steps ``step, step-1, .., step-steps+1`` in one ``torch.autograd.backward``
    call (``steps == 0``: already done by the chain's first ``Back``).
``Free(kind, step)``
    free a stored hidden (``"hidden"``) or internal (``"internal"``) state.

``read`` is a :class:`Read`: where ``h_{a-1}`` comes from (:class:`Src`: the cursor, ``h_0``, a
stored hidden state or a stored internal state's output) and its index.

Chains. Step ``i``'s graph forward is *linked* when the record that ``Backward(i-1)`` consumes
already exists when that forward runs and ``Backward(i-1)`` comes right after ``Backward(i)``:
the two graphs then form one chain that a single backward call processes (every segment a DP
plan stores whole is one chain). Values, gradients and the order in which memory is freed are
those of the unlinked program.

Segments. With ``segments=True`` adjacent linked graph forwards are merged into one
``Graph(a, b)`` (a fused with-graph call), except across a step whose record something else needs
on its own (a later forward reads its output, or the plan frees it before its backward) and
across a block boundary ``breaks`` (plans made on blocks of ``k`` steps price one fused call per
block, so the executor runs exactly those calls).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from ..planning import PlanError, simulate_ops
from ..planning.ops import Backward, Drop, Forward

__all__ = ["Src", "Read", "Run", "Graph", "Back", "Free", "Program", "compile_plan", "plan_ops",
           "PlanError"]


class Src(enum.Enum):
    """Where a forward reads its input state ``h_{a-1}`` from."""

    CURSOR = "cursor"  # the previous instruction's output
    H0 = "h0"  # the initial state
    HIDDEN = "hidden"  # a stored hidden state
    INTERNAL = "internal"  # the output of a stored internal state (a graph record)


@dataclass(frozen=True, slots=True)
class Read:
    src: Src
    step: int  # index j of h_j

    def __str__(self) -> str:
        return {Src.CURSOR: "cursor", Src.H0: "h0"}.get(self.src, f"{self.src.value}:{self.step}")


@dataclass(frozen=True, slots=True)
class Run:
    read: Read
    a: int
    b: int
    store: bool = False

    @property
    def steps(self) -> int:
        return self.b - self.a + 1

    def __str__(self) -> str:
        return f"run {self.a}..{self.b} <- {self.read}" + (" store h" if self.store else "")


@dataclass(frozen=True, slots=True)
class Graph:
    read: Read
    a: int
    b: int
    core: bool = False
    linked: bool = False

    @property
    def steps(self) -> int:
        return self.b - self.a + 1

    def __str__(self) -> str:
        span = f"{self.a}" if self.a == self.b else f"{self.a}..{self.b}"
        return (f"graph {span} <- {'link' if self.linked else self.read}"
                + (" core" if self.core else ""))


@dataclass(frozen=True, slots=True)
class Back:
    step: int
    steps: int = 1

    def __str__(self) -> str:
        if self.steps == 0:
            return f"back {self.step} (in chain)"
        return f"back {self.step}..{self.step - self.steps + 1}"


@dataclass(frozen=True, slots=True)
class Free:
    kind: str  # "hidden" or "internal"
    step: int

    def __str__(self) -> str:
        return f"free {self.kind} {self.step}"


@dataclass(frozen=True)
class Program:
    """A compiled plan: ``instructions[:split]`` is the first sweep (steps 1..T once each, in
    order); ``instructions[split]`` is ``Back(T, ...)``."""

    instructions: tuple
    split: int
    seq_len: int
    segments: bool = False

    @property
    def backward_calls(self) -> int:
        return sum(1 for ins in self.instructions if isinstance(ins, Back) and ins.steps)

    @property
    def graph_calls(self) -> int:
        return sum(1 for ins in self.instructions if isinstance(ins, Graph))

    @property
    def longest_segment(self) -> int:
        return max((ins.steps for ins in self.instructions if isinstance(ins, Graph)), default=0)

    def chain_placement(self) -> str:
        """``"none"`` (every backward call covers one step), ``"first"`` (only the first
        backward call covers several) or ``"later"`` (a later one does)."""
        first = self.instructions[self.split]
        if any(isinstance(ins, Back) and ins.steps > 1
               for ins in self.instructions[self.split + 1:]):
            return "later"
        return "first" if first.steps > 1 else "none"

    def text(self) -> str:
        return "\n".join(str(ins) for ins in self.instructions)


def plan_ops(plan):
    """``(ops, seq_len, breaks)`` of a Plan or of a plain sequence of ops; ValueError otherwise.

    ``breaks`` is the set of steps after which a fused segment must end (the plan's block
    boundaries when it was planned on blocks of steps; None when it was not).
    """
    if isinstance(plan, str):
        raise ValueError(
            f"expected a membptt Plan (from membptt.plan(...)) or a sequence of ops, got the "
            f"string {plan!r}; build one with membptt.plan({plan!r}, seq_len=..., memory=...)")
    ops = getattr(plan, "ops", None)
    if ops is not None and hasattr(plan, "seq_len"):
        return tuple(ops), int(plan.seq_len), block_breaks(plan)
    if isinstance(plan, (list, tuple)) and plan and all(
            isinstance(o, (Forward, Backward, Drop)) for o in plan):
        return tuple(plan), max(o.step for o in plan), None
    raise ValueError(
        "expected a membptt Plan (with .ops and .seq_len) or a non-empty sequence of "
        f"Forward/Backward/Drop ops, got {type(plan).__name__}")


def block_breaks(plan):
    """Segment ends of a plan made for fused segments (``plan.segment_ends``: the last step of
    every block or chain), or None for a step-level plan."""
    bounds = getattr(plan, "segment_ends", None)
    if bounds is None:
        return None
    return frozenset(int(b) for b in bounds)


def compile_plan(ops, T: int, *, segments: bool = False, breaks=None) -> Program:
    """Validate ``ops`` for ``T`` steps (with the simulator) and compile them (module docstring).

    ``segments``: merge adjacent linked graph forwards into fused ``Graph(a, b)`` calls, never
    across a step in ``breaks`` (a set of steps after which a segment must end; None: no
    limit). Raises :class:`~membptt.planning.PlanError` (a ValueError) for an invalid
    plan, naming the op.
    """
    ops = tuple(ops)
    # the one validity check (raises PlanError naming the op); the executor frees internal
    # states at their backward and everything at the end, so trailing Drops are optional
    simulate_ops(ops, T, require_drops=False)
    prog: list = []
    hidden: set = set()
    internal: set = set()
    cursor = None  # index of the cursor state, valid right after a forward
    split = None
    first_next = 1  # next step the first sweep must run
    run = None  # open run: [read, a, b, store]

    def close():
        nonlocal run
        if run is not None:
            prog.append(Run(*run))
            run = None

    for k, op in enumerate(ops):
        if isinstance(op, Forward):
            i, keep = op.step, op.keep
            if split is None:
                if i != first_next:
                    raise PlanError(
                        f"invalid plan at op {k} ({op}): the executor runs the first sweep once, "
                        f"so it must run steps 1..{T} once each in order before the first "
                        f"Backward; expected step {first_next}, got step {i}")
                first_next += 1
            if cursor == i - 1:
                read = Read(Src.CURSOR, i - 1)
            elif i == 1:
                read = Read(Src.H0, 0)
            elif i - 1 in hidden:
                read = Read(Src.HIDDEN, i - 1)
            else:  # the simulator checked that h_{i-1} is held
                read = Read(Src.INTERNAL, i - 1)
            if keep is None or keep == "hidden":
                if run is not None and read.src is Src.CURSOR and run[2] == i - 1:
                    run[2] = i
                else:
                    close()
                    run = [read, i, i, False]
                if keep == "hidden":
                    run[3] = True
                    hidden.add(i)
                    close()
            else:
                close()
                if keep == "internal":
                    internal.add(i)
                prog.append(Graph(read, i, i, keep == "core", False))
            cursor = i
            continue
        close()
        cursor = None
        if isinstance(op, Backward):
            if split is None:
                split = len(prog)
            internal.discard(op.step)
            prog.append(Back(op.step, 1))
        elif op.kind == "hidden":
            hidden.discard(op.step)
            prog.append(Free("hidden", op.step))
        elif op.step in internal:  # (a Drop after its Backward: freed there already)
            internal.discard(op.step)
            prog.append(Free("internal", op.step))
    close()
    program = _link(prog)
    if segments:
        program = _fuse(program, breaks)
        split = next(k for k, ins in enumerate(program) if isinstance(ins, Back))
    return Program(tuple(program), split, T, segments)


def _link(prog):
    """Mark linked graph forwards and give each chain's first ``Back`` its length."""
    prog = list(prog)
    last_graph: dict = {}  # step -> index of its latest graph forward
    consumed: dict = {}  # index of a Back -> index of the graph forward whose record it uses
    for k, ins in enumerate(prog):
        if isinstance(ins, Graph):
            last_graph[ins.a] = k
        elif isinstance(ins, Back):
            consumed[k] = last_graph.pop(ins.step)
    linked = set()
    for k, ins in enumerate(prog):
        if not isinstance(ins, Back) or ins.step == 1 or k + 1 >= len(prog):
            continue
        nxt = prog[k + 1]
        if not isinstance(nxt, Back) or nxt.step != ins.step - 1:
            continue
        g_hi, g_lo = consumed[k], consumed[k + 1]
        if g_lo < g_hi and not prog[g_lo].core:  # step i-1's record (not a core) exists then
            linked.add(g_hi)
    for k in linked:
        prog[k] = replace(prog[k], linked=True)
    k = 0
    while k < len(prog):
        if not isinstance(prog[k], Back):
            k += 1
            continue
        top, n = k, 1
        while prog[consumed[top + n - 1]].linked:  # this step's forward is linked to the next
            n += 1
        prog[top] = Back(prog[top].step, n)
        for m in range(top + 1, top + n):
            prog[m] = Back(prog[m].step, 0)
        k = top + n
    return prog


def _fuse(prog, breaks):
    """Merge adjacent linked graph forwards into fused segments (see the module docstring)."""
    needed = {ins.read.step for ins in prog
              if isinstance(ins, (Run, Graph)) and ins.read.src is Src.INTERNAL}
    needed |= {ins.step for ins in prog if isinstance(ins, Free) and ins.kind == "internal"}
    out: list = []
    for ins in prog:
        prev = out[-1] if out else None
        if (isinstance(ins, Graph) and isinstance(prev, Graph) and ins.linked
                and not prev.core and ins.a == prev.b + 1 and prev.b not in needed
                and (breaks is None or prev.b not in breaks)):
            out[-1] = Graph(prev.read, prev.a, ins.b, ins.core, prev.linked)
        else:
            out.append(ins)
    return out
