"""Run a plan on a real step function, inside autograd: :func:`bptt`.

The user writes one *step*::

    def step(state, x_t):          # state: a tensor or a (nested) tuple/list/dict of tensors
        ...
        return new_state, loss_t   # same structure/shapes as state; loss_t a 0-dim tensor

and calls ``loss = bptt(step, state0, inputs, plan)``; ``loss`` is ``sum_t loss_t`` and
``loss.backward()`` executes the plan's backward part, accumulating into every parameter the
step uses exactly the gradients of plain backpropagation through time, and returning gradients
for ``state0`` and ``inputs`` when they require grad.

How it works (the reentrant design of ``torch.utils.checkpoint``)
-----------------------------------------------------------------

``bptt`` is a custom :class:`torch.autograd.Function`. Its forward executes the plan's *first
sweep* (every op before the first ``Backward``; it runs steps 1..T once each, in order) and sums
the losses. Its backward executes the rest. The plan is compiled first
(:mod:`membptt.execution.compile`: named instructions ``Run``, ``Graph``, ``Back``, ``Free``;
validity is the simulator's). A forward with a graph runs under ``enable_grad`` from *detached
leaf copies* of ``h_{a-1}`` (and of the inputs when they require grad); a ``Back`` calls
``torch.autograd.backward`` on the records' losses and outputs with grad outputs ``(dL, dh)``,
which accumulates the parameters' ``.grad`` and leaves ``dh_{a-1}`` in the leaves' ``.grad``
(input gradients are moved out by a post-accumulate hook as soon as they exist). Graph-free
forwards run under ``no_grad``. Storage is shared, never copied: a stored hidden state is the
cursor tensor itself; an internal state is the step's graph plus its outputs, so memory is what
the plan's accounting says (see ``docs/executor.md``).

Chains. When the plan stores the internal states of consecutive steps ``k..j`` and
backpropagates them one after the other (``Backward(j), .., Backward(k)`` adjacent, as every
segment that a DP plan stores whole), step ``i``'s forward reads ``h_{i-1}`` from step
``i-1``'s graph outputs instead of a detached copy, and ``Backward(j)`` backpropagates the whole
chain with one ``torch.autograd.backward`` call. That saves the per-call overhead of one call
per step, runs the same operations and frees each step's graph as autograd passes it. Autograd
sums the parameter gradients of a chain in one buffer before adding it to ``.grad``: one
parameter-gradient's worth of memory more, which the probed working set includes.

Fused runs. A step object may offer ``advance(state, xs, need_loss) -> (state, loss_sum|None)``
that performs ``len(xs)`` graph-free steps at once (``xs`` is ``inputs[a-1:b]``, time on dim 0).
The executor uses it for every run of graph-free forwards when the step also says
``step.deterministic`` is true (it must consume no random numbers: a fused run cannot replay
the per-step RNG stream). An ``advance`` that also takes ``chunk`` (steps per fused call, the
shipped LSTM/GRU steps and ``FusedRNNStep``) gets its calls planned: the probe measures one
call's transient by length (``SegmentCosts.run_bytes``), the plan's prediction says the longest
call its memory admits (``Prediction.run_cap``), and each run is made as the fewest calls of at
most that many steps (``membptt.planning.prices.run_calls``), as it was priced.

Fused segments. A step object may also offer ``segment(state, xs) -> (state, loss_sum)``: the
forwards *with graph* of ``len(xs)`` steps in one call (for example one ``nn.LSTM`` call, cuDNN
on CUDA, oneDNN on CPU, plus the head and the summed loss), returning the final state and the
summed loss, both with graph. The executor runs adjacent linked graph forwards through it (one
record, backpropagated by the chain's one backward call) when the step is deterministic and the
plan was planned on fused blocks (``plan.segment_ends``; a segment never crosses a block
boundary, so what runs is what was priced), or when ``segments=True`` is passed. A fused
segment holds different bytes per step than stepped cells (oneDNN/cuDNN keep workspaces): plans
made for stepped execution are not run fused unless asked, so their budgets hold.
:class:`membptt.models.LSTMLanguageModel` implements both with an ``nn.LSTM`` sharing the
cell's weights; :class:`membptt.models.FusedRNNStep` adapts a user's own ``nn.LSTM``/``nn.GRU``.

Randomness. With ``preserve_rng_state=True`` (default, unless the step is deterministic) the
CPU and CUDA RNG states are snapshotted with every stored state (and before step 1) and restored
whenever a forward restarts from a stored state, so dropout masks on recomputation equal those
of the first sweep, and of plain BPTT with the same seed. The global RNG state after
``backward`` is what it was before it. Only the default generators are handled: a step drawing
from a private ``torch.Generator`` is not replayed (``membptt.probe`` checks replay and refuses
such a step).

Autocast state at the call is re-entered for recomputation.

Outputs mode (``Executor(..., outputs=True)``, used by :func:`membptt.wrap` and
:func:`membptt.scan`): the step returns ``(state, y_t)``; the first sweep writes every ``y_t``
into ``ys`` and each backward call sends the records' slices of ``dL/dys`` into their outputs
(the loss of step ``t`` is ``<y_t, dL/dy_t>``); see :mod:`membptt.execution.wrap`.

Limitations: gradients flow via ``loss.backward()`` (or ``torch.autograd.backward``);
``torch.autograd.grad(loss, params)`` does not see the parameters (they are closed over by the
step, exactly as with reentrant checkpointing); for an ``nn.Module`` step it is refused with a
message saying what to do. No double backward; backward runs once. A backward that raises
midway puts the parameters' ``.grad`` back as it was.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch.autograd.graph import get_gradient_edge
from torch.utils import _pytree as pytree

from ..planning.prices import run_chunk
from .compile import Back, Graph, Program, Read, Run, Src, compile_plan, plan_ops

__all__ = ["bptt", "ExecStats", "Executor", "Record", "compile_plan", "compiled", "plain_bptt"]


@dataclass
class ExecStats:
    """What one :func:`bptt` call executed (filled in when passed as ``stats=``).

    ``step_calls`` counts invocations of ``step(...)`` (graph-free and with graph);
    ``fused_steps`` counts steps advanced by ``step.advance`` (in ``fused_runs`` calls);
    ``segment_steps`` steps run with graph by ``step.segment`` (in ``segment_calls`` calls).
    ``step_calls + fused_steps + segment_steps == plan.forward_ops`` always; ``graph_steps ==
    plan.graph_forwards``; ``backward_steps == plan.seq_len``; ``backward_calls`` counts the
    ``torch.autograd.backward`` calls (one per chain of linked steps). ``deferred_steps``: steps
    whose forward with graph was deferred from the first sweep to the start of the backward
    (outputs mode with ``defer``; each adds one forward: ``forward_steps == plan.forward_ops +
    deferred_steps``).
    """

    step_calls: int = 0
    graph_steps: int = 0
    fused_runs: int = 0
    fused_steps: int = 0
    segment_calls: int = 0
    segment_steps: int = 0
    backward_steps: int = 0
    backward_calls: int = 0
    deferred_steps: int = 0
    fused: bool = False
    segments: bool = False
    preserve_rng: bool = False

    @property
    def forward_steps(self) -> int:
        return self.step_calls + self.fused_steps + self.segment_steps


@dataclass(slots=True)
class Record:
    """A forward with graph of steps ``a..b``: everything its backward needs.

    ``hin``: the leaf copies of ``h_{a-1}`` the graph starts from (None when it reads the
    previous record's outputs: linked); ``xleaf``: input leaves (when inputs require grad);
    ``out``: ``h_b`` with graph (a tuple of tensors); ``loss``: the summed loss of the steps,
    with graph; ``cur``: ``h_b`` detached; ``snap``: the RNG state after step ``b``.
    """

    a: int
    b: int
    hin: tuple | None
    xleaf: tuple | None
    out: tuple
    loss: torch.Tensor
    cur: tuple
    snap: object = None


# -- plan compilation (cached per plan object, bounded by bytes) ----------------------------------

#: the most bytes the compiled-program cache holds (programs and the op tuples they keep alive,
#: estimated with ``sys.getsizeof``); least recently used programs are evicted first, and a
#: program larger than this is compiled but not kept
COMPILED_CACHE_BYTES = 64 * 2**20

_COMPILED: OrderedDict = OrderedDict()  # key -> (ops, program, bytes)
_COMPILED_BYTES = [0]


def _program_bytes(ops, prog: Program) -> int:
    """Estimated bytes of a cache entry: the instruction and op objects (with their ``Read``s)
    and the two tuples. O(len) once per compile, as the compile itself."""
    n = sys.getsizeof(prog.instructions) + sys.getsizeof(ops) + sys.getsizeof(prog)
    for ins in prog.instructions:
        n += sys.getsizeof(ins)
        read = getattr(ins, "read", None)
        if read is not None:
            n += sys.getsizeof(read)
    for op in ops:
        n += sys.getsizeof(op)
    return n


def compiled_cache_info() -> dict:
    """``{"entries", "bytes", "limit"}`` of the compiled-program cache."""
    return {"entries": len(_COMPILED), "bytes": _COMPILED_BYTES[0],
            "limit": COMPILED_CACHE_BYTES}


def _cache_drop(key):
    entry = _COMPILED.pop(key, None)
    if entry is not None:
        _COMPILED_BYTES[0] -= entry[2]


def compiled(plan, *, segments: bool | None = None) -> Program:
    """The :class:`~membptt.execution.compile.Program` the executor runs for ``plan``.

    ``segments=None``: fused segments exactly when the plan was planned on fused blocks
    (``plan.segment_ends``); True/False forces them on/off (whether the step can run them is
    checked by the executor). Cached per plan object, least recently used first out, within
    :data:`COMPILED_CACHE_BYTES`.
    """
    ops, T, breaks = plan_ops(plan)
    seg = breaks is not None if segments is None else bool(segments)
    key = (id(ops), T, seg)
    hit = _COMPILED.get(key)
    if hit is not None and hit[0] is ops:
        _COMPILED.move_to_end(key)
        return hit[1]
    prog = compile_plan(ops, T, segments=seg, breaks=breaks)
    _cache_drop(key)  # (a dead ops tuple whose id was reused)
    size = _program_bytes(ops, prog)
    limit = COMPILED_CACHE_BYTES
    if size <= limit:
        while _COMPILED and _COMPILED_BYTES[0] + size > limit:
            _cache_drop(next(iter(_COMPILED)))
        _COMPILED[key] = (ops, prog, size)
        _COMPILED_BYTES[0] += size
    return prog


# -- RNG / autocast ----------------------------------------------------------------------------

def rng_snapshot(cuda_devices):
    """The default generators' states: the CPU one and those of ``cuda_devices``."""
    return (torch.get_rng_state(),
            [torch.cuda.get_rng_state(d) for d in cuda_devices])


def rng_restore(snap, cuda_devices):
    """Put back a :func:`rng_snapshot`."""
    torch.set_rng_state(snap[0])
    for d, s in zip(cuda_devices, snap[1]):
        torch.cuda.set_rng_state(s, d)


def _autocast_ctx(captured):
    stack = contextlib.ExitStack()
    for dev, enabled, dtype in captured:
        stack.enter_context(torch.autocast(dev, dtype=dtype, enabled=enabled))
    return stack


def _capture_autocast():
    out = []
    for dev in ("cpu", "cuda"):
        if torch.is_autocast_enabled(dev):
            out.append((dev, True, torch.get_autocast_dtype(dev)))
    return out


# -- state structure -------------------------------------------------------------------------------

def _describe(t):
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def _leaf_paths(obj):
    """``(paths, leaves, spec)`` of a pytree; paths as readable strings (``[0][1]``, ``['c']``)."""
    with_path, spec = pytree.tree_flatten_with_path(obj)
    paths = ["".join(str(k) for k in p) for p, _ in with_path]
    return paths, [v for _, v in with_path], spec


class _Structure:
    """The state's structure: a tensor, a flat tuple of tensors, or any pytree of tensors
    (nested tuples/lists/dicts). The executor holds states as flat tuples of tensors."""

    def __init__(self, state0, what="state0"):
        if isinstance(state0, torch.Tensor):
            self.kind, self.spec, self.n, self.paths = "single", None, 1, [""]
            self.leaves = (state0,)
            return
        if isinstance(state0, tuple) and state0 and all(
                isinstance(t, torch.Tensor) for t in state0):
            self.kind, self.spec, self.n = "flat", None, len(state0)
            self.paths = [f"[{k}]" for k in range(len(state0))]
            self.leaves = tuple(state0)
            return
        if not isinstance(state0, (tuple, list, dict)) or not state0:
            raise ValueError(f"expected {what} to be a tensor or a non-empty tuple/list/dict of "
                             f"tensors (nested allowed), got {type(state0).__name__}")
        paths, leaves, spec = _leaf_paths(state0)
        for p, v in zip(paths, leaves):
            if not isinstance(v, torch.Tensor):
                raise ValueError(f"expected {what} to hold only tensors, but {what}{p} is "
                                 f"{type(v).__name__}")
        if not leaves:
            raise ValueError(f"expected {what} to hold at least one tensor, got an empty "
                             f"{type(state0).__name__}")
        self.kind, self.spec, self.n, self.paths = "tree", spec, len(leaves), paths
        self.leaves = tuple(leaves)

    def user(self, h):
        """The flat tuple ``h`` in the user's structure."""
        if self.kind == "single":
            return h[0]
        if self.kind == "flat":
            return h
        return pytree.tree_unflatten(list(h), self.spec)

    def flat(self, out, where):
        """The user's state ``out`` as a flat tuple, checked against the structure."""
        if self.kind == "single":
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"{where}: expected the state to be a tensor (like state0), "
                                 f"got {type(out).__name__}")
            return (out,)
        if self.kind == "flat":
            if type(out) is tuple and len(out) == self.n:
                return out
            if not isinstance(out, (tuple, list)) or len(out) != self.n:
                raise ValueError(
                    f"{where}: expected the state to be a tuple of {self.n} tensors (like "
                    f"state0), got {type(out).__name__}"
                    + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
            return tuple(out)
        leaves, spec = pytree.tree_flatten(out)
        if spec != self.spec:
            raise ValueError(f"{where}: the state's structure changed: expected {self.spec}, "
                             f"got {spec}")
        return tuple(leaves)


# -- the executor ------------------------------------------------------------------------------------


class _StepInputs:
    """Step ``i``'s inputs (0-based) as views selected when asked for: ``x[i]`` for one input
    tensor, the tuple ``(x[i] for x in inputs)`` for several. Indexing like the tuple of
    ``unbind(0)`` views it replaces, without materialising ``T`` views per executor."""

    __slots__ = ("_xs", "_single", "_n")

    def __init__(self, xs, single):
        self._xs, self._single, self._n = xs, bool(single), int(xs[0].shape[0])

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        if not -self._n <= i < self._n:
            raise IndexError(f"step input index {i} out of range for {self._n} steps")
        if self._single:
            return self._xs[0][i]
        return tuple(t[i] for t in self._xs)


class Executor:
    """Runs a step function's forwards and backwards the way :func:`bptt` does.

    This is the seam that :func:`bptt`, :func:`membptt.probe` and the working-set measurement
    share, so that what is measured is what is executed::

        ex = Executor(step, state0, inputs)
        h = ex.start()                                   # h_0 as a flat tuple of tensors
        h, loss = ex.run(h, 1, 10, need_loss=True)       # graph-free steps 1..10 (fused if able)
        r1 = ex.graph(h, 11, 18)                         # steps 11..18 with graph (one segment)
        r2 = ex.graph(r1.cur, 19, link=r1)               # step 19, linked to r1's graph
        dh = ex.backward([r2, r1], dh=None)              # one autograd call; returns dh_10

    ``fused``: use ``step.advance`` for graph-free runs (only when ``step.deterministic``);
    ``segments``: use ``step.segment`` for multi-step graph forwards (only when deterministic).
    """

    def __init__(self, step, state0, inputs, *, seq_len: int | None = None, fused: bool = True,
                 segments: bool = True, preserve_rng_state: bool = True,
                 stats: ExecStats | None = None, outputs: bool = False):
        self.step = step
        # outputs mode (membptt.scan / membptt.wrap): the step returns (state, y_t) instead of
        # (state, loss_t); the first sweep writes y_t into ``ys`` (time-major, the caller's
        # tensor) and a backward sends ``gys[t]`` (dL/dy_t) into each record's outputs
        self.outputs = bool(outputs)
        self.ys = None
        self.ys_out = None
        self.gys = None
        # defer (outputs mode): the first sweep runs its graph forwards graph-free and the
        # backward rebuilds them first, so that between forward and backward (while the
        # caller's head runs) only hidden states are held
        self.defer = False
        self.deferred: list = []  # (h_in or None, RNG snapshot, [Graph, ...]) per group
        self._pending = None  # the group being collected: [a, b, h_in, snap, [Graph, ...]]
        self._dropped: set = set()
        self.structure = _Structure(state0)
        s0 = self.structure.leaves
        for k, t in enumerate(s0):
            if not t.is_floating_point():
                raise ValueError(f"expected floating-point state tensors, got state0"
                                 f"{self.structure.paths[k]} with dtype {t.dtype}")
        xs, single_in = _as_tensors(inputs, "inputs")
        T = seq_len
        for k, t in enumerate(xs):
            if t.dim() == 0 or (T is not None and t.shape[0] != T):
                n = "a 0-dim tensor" if t.dim() == 0 else f"{t.shape[0]} time steps (dim 0)"
                hint = ""
                if t.dim() >= 2 and t.shape[1] == T:
                    hint = (f"; its dim 1 has {T}: batch-first data? Time must be on dim 0 "
                            "(x.transpose(0, 1); FusedRNNStep.inputs(...) does it for a "
                            "batch_first module)")
                raise ValueError(f"inputs{'' if single_in else f'[{k}]'} has {n}, but the plan "
                                 f"is for seq_len={T}: expected {T} time steps{hint}")
        if len({t.shape[0] for t in xs}) != 1:
            raise ValueError("expected every input tensor to have the same length on dim 0 "
                             f"(time), got {[t.shape[0] for t in xs]}")
        self.T = xs[0].shape[0] if T is None else T
        self.deterministic = bool(getattr(step, "deterministic", False))
        self.fused = (bool(fused) and self.deterministic
                      and callable(getattr(step, "advance", None)))
        self.segments = (bool(segments) and self.deterministic
                         and callable(getattr(step, "segment", None)))
        # planned chunk lengths: a step whose advance takes ``chunk`` runs a graph-free run in
        # calls of at most ``run_cap`` steps (the plan's prediction says how many its memory
        # admits); None: the step's own split
        self.chunked = self.fused and _takes_chunk(step.advance)
        self.run_cap: int | None = None
        self.preserve = bool(preserve_rng_state) and not self.deterministic
        self.stats = ExecStats() if stats is None else stats
        self.stats.fused, self.stats.preserve_rng = self.fused, self.preserve
        self.stats.segments = False
        self.single = self.structure.kind == "single"
        self.state0 = s0  # flat tuple
        self.inputs = xs  # tuple
        self.single_input = single_in
        self.state0_grad = any(t.requires_grad for t in s0)
        self.x_grad = tuple(t.requires_grad and t.is_floating_point() for t in xs)
        self.any_x_grad = any(self.x_grad)
        # Per-step input views on demand (O(1) here): unbinding the inputs into T views at
        # construction cost O(T) Python per iteration that a checkpoint does not pay (issue 18).
        self.xsteps = _StepInputs(tuple(t.detach() for t in xs), single_in)
        devs = {t.device for t in s0 + xs if t.device.type == "cuda"}
        self.cuda_devices = sorted(devs, key=str)
        self.autocast = _capture_autocast()
        self.program: Program | None = None
        self.hidden: dict = {}
        self.internal: dict = {}  # last step of a record -> Record
        self.core: Record | None = None
        self.cursor = None
        self.rng0 = None
        self.loss_sum = None
        self.dh = None
        self.gloss = None
        self.gx = None
        self.final = None
        self.grad_stash = None

    # -- helpers
    def start(self) -> tuple:
        """``h_0`` as the flat tuple of tensors the executor works with."""
        return self.state0

    def user(self, h):
        """A flat state tuple in the user's structure (a tensor, a tuple, a pytree)."""
        return self.structure.user(h)

    def sync(self) -> None:
        for d in self.cuda_devices:
            torch.cuda.synchronize(d)

    def reset(self) -> None:
        """Forget every stored state, the cursor and pending gradients."""
        self.hidden.clear()
        self.internal.clear()
        self.core = None
        self.dh = None
        self.cursor = None
        self.loss_sum = None

    def _check(self, where, out, loss):
        """Validation of one call's results; returns the state as a flat tuple."""
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            got = (f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor)
                   else type(loss).__name__)
            raise ValueError(f"{where}: expected the step to return a scalar (0-dim) loss "
                             f"tensor, got {got}")
        return self._check_state(where, out)

    def _check_state(self, where, out):
        out = self.structure.flat(out, where)
        for k, (t, r) in enumerate(zip(out, self.state0)):
            if (not isinstance(t, torch.Tensor) or t.shape != r.shape or t.dtype != r.dtype
                    or t.device != r.device):
                got = _describe(t) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(
                    f"{where}: state element {k} changed: expected {_describe(r)} (as in "
                    f"state0), got {got}; the state must keep its shapes, dtypes and devices")
        return out

    def _check_out(self, where, out, y, a, b):
        """Outputs mode: validate ``y`` (the outputs of steps ``a..b``: ``y_a`` when ``a == b``,
        else stacked on dim 0), write it into ``ys`` (allocated at the first output); returns
        the state as a flat tuple."""
        if not isinstance(y, torch.Tensor):
            raise ValueError(f"{where}: expected the step to return (state, y_t) with y_t a "
                             f"tensor, got {type(y).__name__} as y_t")
        if self.ys is None:
            shape = y.shape if a == b else y.shape[1:]
            self.ys = y.new_empty((self.T, *shape))
        dst = self.ys[a - 1] if a == b else self.ys[a - 1:b]
        if y.shape != dst.shape or y.dtype != dst.dtype or y.device != dst.device:
            want = ("" if a == b else f"({b - a + 1}, ...) stacked: ") + _describe(dst)
            raise ValueError(f"{where}: the output y_t changed: expected {want} (as the "
                             f"outputs before), got {_describe(y)}; every step's output must "
                             "keep its shape, dtype and device")
        dst.copy_(y)
        return self._check_state(where, out)

    def run_outputs(self, h, a: int, b: int):
        """Outputs mode: graph-free forwards of steps ``a..b`` from ``h = h_{a-1}`` writing each
        ``y_t`` into ``ys[t-1]``; fused as one ``step.advance(state, xs, out)`` call (``out`` the
        view ``ys[a-1:b]`` to fill; a step that takes planned chunk lengths gets ``chunk``, the
        fewest calls of at most ``run_cap`` steps) when able. Returns ``h_b``."""
        step = self.step
        with torch.no_grad():
            if self.fused and self.ys is not None:
                out, _ = step.advance(self.user(h), self._xs(a, b), self.ys[a - 1:b],
                                      **self._chunk_kw(a, b))
                self.stats.fused_runs += 1
                self.stats.fused_steps += b - a + 1
                return self._check_state(f"steps {a}..{b} (step.advance)", out)
            xsteps = self.xsteps
            for i in range(a, b + 1):
                out, y = step(self.user(h), xsteps[i - 1])
                h = self._check_out(f"step {i}", out, y, i, i)
            self.stats.step_calls += b - a + 1
        return h

    # public names of the checks and slices (the probe uses them)
    def check(self, where, out, loss):
        """A step call's ``(state, loss)``: the loss a 0-dim tensor, the state like
        ``state0``; returns the state as a flat tuple (ValueError naming ``where``)."""
        return self._check(where, out, loss)

    def check_state(self, where, out):
        """A state like ``state0`` (structure, shapes, dtypes, devices) as a flat tuple."""
        return self._check_state(where, out)

    def inputs_of(self, a: int, b: int):
        """The inputs of steps ``a..b`` (time on dim 0), as ``step.advance``/``segment`` get
        them."""
        return self._xs(a, b)

    def _as_flat(self, out):
        if self.single:
            return (out,)
        if type(out) is tuple and self.structure.kind == "flat":
            return out
        return self.structure.flat(out, "step")

    def _source(self, read: Read):
        src = read.src
        if src is Src.CURSOR:
            return self.cursor
        if src is Src.HIDDEN:
            h, snap = self.hidden[read.step]
        elif src is Src.INTERNAL:
            rec = self.internal[read.step]
            h, snap = rec.cur, rec.snap
        else:
            h, snap = self.state0, self.rng0
        if snap is not None:
            rng_restore(snap, self.cuda_devices)
        return h

    def _snap(self):
        return rng_snapshot(self.cuda_devices) if self.preserve else None

    def input_grads(self, on: bool) -> None:
        """Collect input gradients outside a backward phase (the probe's measurements): with
        ``on``, the input leaves' gradients land in zero buffers (``ex.gx``) as in a
        backward; off, they are dropped."""
        self.gx = ([torch.zeros_like(t) if g else None for t, g in zip(self.inputs, self.x_grad)]
                   if on and self.any_x_grad else None)

    def _xs(self, a, b):
        if self.single_input:
            return self.inputs[0][a - 1:b]
        return tuple(t[a - 1:b] for t in self.inputs)

    # -- graph-free runs
    def _chunk_kw(self, a: int, b: int, chunk: int | None = None) -> dict:
        """``advance``'s planned chunk for steps ``a..b``: ``chunk`` if given, else the fewest
        calls of at most ``run_cap`` steps; nothing for a step that takes none or unplanned."""
        if not self.chunked:
            return {}
        if chunk is None and self.run_cap is not None:
            chunk = run_chunk(b - a + 1, self.run_cap)
        return {} if chunk is None else {"chunk": chunk}

    def run(self, h, a: int, b: int, *, need_loss: bool = False, check: bool = False,
            total=None, chunk: int | None = None):
        """Graph-free forwards of steps ``a..b`` from ``h = h_{a-1}`` (flat tuple), fused
        through ``step.advance`` when able; returns ``(h_b, loss)``: with ``need_loss`` the
        steps' losses added to ``total`` one by one in step order (so the first sweep sums
        exactly as plain BPTT does), else ``(h_b, None)``. A step that takes planned chunk
        lengths gets ``chunk`` (default: the fewest calls of at most ``run_cap`` steps, when a
        plan set one)."""
        step, stats = self.step, self.stats
        with torch.no_grad():
            if self.fused:
                out, loss = step.advance(self.user(h), self._xs(a, b), need_loss,
                                         **self._chunk_kw(a, b, chunk))
                stats.fused_runs += 1
                stats.fused_steps += b - a + 1
                if need_loss:
                    h = self._check(f"steps {a}..{b} (step.advance)", out, loss)
                    total = loss if total is None else total + loss
                elif check:
                    h = self._check_state(f"steps {a}..{b} (step.advance)", out)
                else:
                    h = self._as_flat(out)
            elif need_loss or check:
                xsteps = self.xsteps
                for i in range(a, b + 1):
                    out, loss = step(self.user(h), xsteps[i - 1])
                    h = self._check(f"step {i}", out, loss)
                    if need_loss:
                        total = loss if total is None else total + loss
                stats.step_calls += b - a + 1
            else:
                xsteps = self.xsteps
                if self.single:
                    hh = h[0]
                    for i in range(a, b + 1):
                        hh = step(hh, xsteps[i - 1])[0]
                    h = (hh,)
                else:
                    user, flat = self.user, self._as_flat
                    for i in range(a, b + 1):
                        h = flat(step(user(h), xsteps[i - 1])[0])
                stats.step_calls += b - a + 1
        return h, (total if need_loss else None)

    # -- forwards with graph
    def graph(self, h, a: int, b: int | None = None, *, link: Record | None = None,
              check: bool = False) -> Record:
        """Forwards with graph of steps ``a..b`` (default ``b = a``) from ``h = h_{a-1}``: one
        ``step`` call, or one ``step.segment`` call when ``b > a``. With ``link`` (the record of
        the steps just before), the graph starts from ``link.out`` instead of a detached copy
        of ``h``, so both records form one chain for :meth:`backward`."""
        b = a if b is None else b
        if link is not None:
            hin, h = None, link.out
        elif a > 1 or self.state0_grad:
            hin = h = tuple(t.detach().requires_grad_() for t in h)
        else:
            hin = h
        seg = b > a
        if seg:
            if not self.segments:
                raise RuntimeError(f"steps {a}..{b}: a multi-step forward with graph needs "
                                   "step.segment and a deterministic step")
            x = self._xs(a, b)
            tslice = slice(a - 1, b)
        else:
            x = self.xsteps[a - 1]
            tslice = a - 1
        xleaf = None
        if self.any_x_grad:
            if self.single_input:
                xleaf = (x.detach().requires_grad_(),)
                x = xleaf[0]
            else:
                xleaf = tuple(t.detach().requires_grad_() if g else t
                              for t, g in zip(x, self.x_grad))
                x = xleaf
            # move each input gradient out as soon as it is accumulated
            for k, leaf in enumerate(xleaf):
                if self.x_grad[k]:
                    leaf.register_post_accumulate_grad_hook(_XGradSink(self, k, tslice))
        with torch.enable_grad():
            if seg:
                out, loss = self.step.segment(self.user(h), x)
            else:
                out, loss = self.step(self.user(h), x)
        if check:
            where = f"steps {a}..{b} (step.segment)" if seg else f"step {a}"
            out = (self._check_out(where, out, loss, a, b) if self.outputs
                   else self._check(where, out, loss))
        else:
            out = self._as_flat(out)
        stats = self.stats
        if seg:
            stats.segment_calls += 1
            stats.segment_steps += b - a + 1
            stats.segments = True
        else:
            stats.step_calls += 1
        stats.graph_steps += b - a + 1
        return Record(a, b, hin, xleaf, out, loss, tuple(t.detach() for t in out))

    # -- backward
    def backward(self, records, *, dh=None, gloss=None):
        """Backpropagate a chain of records (newest first: ``records[0]`` holds the highest
        steps; each later one the steps just before, linked to it) in one
        ``torch.autograd.backward`` call, with ``dh`` the gradient of the newest record's
        output state (None: zero) and ``gloss`` the gradient of every loss (default: 1).
        Returns the gradient of the oldest record's input state (a flat tuple; None where it
        needs none). The records' graphs are freed as autograd passes them."""
        tensors, grads = [], []
        if self.outputs:  # each record's outputs get their slice of dL/dys (none: unused)
            gys = self.gys
            if gys is not None:
                for rec in records:
                    if rec.loss.requires_grad:
                        tensors.append(rec.loss)
                        grads.append(gys[rec.a - 1] if rec.a == rec.b else gys[rec.a - 1:rec.b])
        else:
            if gloss is None:
                gloss = torch.ones((), dtype=records[0].loss.dtype,
                                   device=records[0].loss.device)
            for rec in records:
                if rec.loss.requires_grad:
                    tensors.append(rec.loss)
                    grads.append(gloss)
        if dh is not None:
            for o, d in zip(records[0].out, dh):
                if d is not None and o.requires_grad:
                    # the output's gradient edge, not the output: backward then holds no
                    # output state (autograd needs only where its gradient enters the graph;
                    # a checkpoint's engine holds none either)
                    tensors.append(get_gradient_edge(o))
                    grads.append(d)
        low = records[-1]
        hin, a = low.hin, low.a
        n = records[0].b - a + 1
        # only the graphs hold the chain now; they free as backward goes (no record is held:
        # a record keeps its output state, which a checkpoint drops before its backward; nor
        # is one held by a loop variable left over from above)
        rec = o = None
        del dh, low, records[:], rec, o
        if tensors:
            torch.autograd.backward(tensors, grads)
        del tensors, grads
        self.stats.backward_steps += n
        self.stats.backward_calls += 1
        if hin is not None and (a > 1 or self.state0_grad):
            return tuple(t.grad for t in hin)
        return None

    # -- executing a program
    def _run(self, ins: Run, first: bool):
        if first and self.outputs:
            if self._pending is not None:
                self._flush()
            h = self.run_outputs(self._source(ins.read), ins.a, ins.b)
        else:
            h, loss = self.run(self._source(ins.read), ins.a, ins.b, need_loss=first,
                               check=first, total=self.loss_sum)
            if first:
                self.loss_sum = loss
        if ins.store:
            self.hidden[ins.b] = (h, self._snap())
        self.cursor = h

    def _defer(self, ins: Graph):
        """First sweep, deferring: collect ``ins`` into the pending group of contiguous linked
        graph forwards (run graph-free, outputs written, when the group ends)."""
        p = self._pending
        if p is not None and ins.linked and ins.a == p[1] + 1:
            p[1] = ins.b
            p[4].append(ins)
            return
        self._flush()
        h = self._source(ins.read)
        self._pending = [ins.a, ins.b, h, self._snap(), [ins]]

    def _flush(self):
        p, self._pending = self._pending, None
        if p is None:
            return
        a, b, h, snap, group = p
        self.cursor = self.run_outputs(h, a, b)
        self.deferred.append((None if group[0].linked else h, snap, group))
        self.stats.deferred_steps += b - a + 1

    def _replay_deferred(self):
        """Backward phase, first: rebuild the deferred graph forwards, in order, exactly as the
        first sweep would have built them (same inputs, same RNG stream)."""
        deferred, self.deferred = self.deferred, []
        for hin, snap, group in deferred:
            if snap is not None:
                rng_restore(snap, self.cuda_devices)
            for ins in group:
                if ins.b in self._dropped:
                    continue
                link = self.internal[ins.a - 1] if ins.linked else None
                rec = self.graph(hin, ins.a, ins.b, link=link)
                if ins.core:
                    self.core = rec
                else:
                    rec.snap = self._snap()
                    self.internal[ins.b] = rec
        self._dropped.clear()

    def _free_internal(self, step):
        if self.internal.pop(step, None) is None:  # a deferred record: never rebuild it
            self._dropped.add(step)

    def _graph(self, ins: Graph, first: bool):
        if first and self.defer:
            return self._defer(ins)
        h = self._source(ins.read)  # (also restores the RNG state when restarting)
        link = self.internal[ins.a - 1] if ins.linked else None
        rec = self.graph(h, ins.a, ins.b, link=link, check=first)
        if first and not self.outputs:
            ld = rec.loss.detach()
            self.loss_sum = ld if self.loss_sum is None else self.loss_sum + ld
        if ins.core:
            self.core = rec
        else:
            rec.snap = self._snap()
            self.internal[ins.b] = rec
        self.cursor = rec.cur

    def _back(self, ins: Back):
        if ins.steps == 0:
            return  # backpropagated by the chain's first Back
        recs = []
        s, low = ins.step, ins.step - ins.steps + 1
        while s >= low:
            if self.core is not None and self.core.b == s:
                rec, self.core = self.core, None
            else:
                rec = self.internal.pop(s)
            recs.append(rec)
            s = rec.a - 1
        del rec  # the chain is in recs only, which backward() empties
        dh, self.dh = self.dh, None
        if self.grad_stash is None:  # the first chain: its graph names the step's parameters
            self.grad_stash = _GradStash(graph_params(
                [r.loss for r in recs] + [t for r in recs[:1] for t in r.out]))
        self.dh = self.backward(recs, dh=dh, gloss=self.gloss)

    def _exec(self, lo, hi, first):
        prog = self.program.instructions
        for k in range(lo, hi):
            ins = prog[k]
            t = type(ins)
            if t is Run:
                self._run(ins, first)
            elif t is Graph:
                self._graph(ins, first)
            elif t is Back:
                self.cursor = None
                self._back(ins)
            elif ins.kind == "hidden":  # Free
                del self.hidden[ins.step]
            else:
                self._free_internal(ins.step)

    # -- phases
    def forward(self):
        self.rng0 = self._snap()
        self._exec(0, self.program.split, True)
        if self._pending is not None:
            self._flush()
        self.final = self.cursor

    def eval_forward(self):
        """All steps graph-free (under no_grad): the loss only."""
        self.rng0 = None
        self._run(Run(Read(Src.H0, 0), 1, self.T), True)
        return self.loss_sum

    def backward_phase(self, gloss, gfinal, params=None):
        """Execute the program's backward part. ``params``: the parameters the step uses
        (None: found by walking the graph of the first chain backpropagated); if anything
        raises midway, their ``.grad`` is restored to its value before this call (no partial
        gradients are left behind) and the stored states are freed."""
        self.gloss = gloss
        if any(g is not None for g in gfinal):
            self.dh = tuple(gfinal)
        if self.any_x_grad:
            self.gx = [torch.zeros_like(t) if g else None
                       for t, g in zip(self.inputs, self.x_grad)]
        self.cursor = None
        self.final = None
        self.grad_stash = None if params is None else _GradStash(params)
        devices = self.cuda_devices
        try:
            with torch.random.fork_rng(devices=devices, enabled=self.preserve), \
                    _autocast_ctx(self.autocast):
                if self.deferred:
                    self._replay_deferred()
                self._exec(self.program.split, len(self.program.instructions), False)
        except BaseException:
            if self.grad_stash is not None:
                self.grad_stash.restore()
            self.reset()
            self.internal.clear()
            self.deferred = []
            self.gx = self.gys = self.grad_stash = None
            raise
        self.grad_stash = None
        g0 = self.dh if self.state0_grad else None
        gx = self.gx
        self.dh = self.gx = self.gys = None
        self.hidden.clear()
        self.internal.clear()
        return g0, gx


def graph_params(tensors, limit: float = 4096) -> list:
    """Leaf tensors requiring grad reachable from ``tensors``' graphs within the first
    ``limit`` autograd nodes, breadth first (a step's parameters sit a few nodes from its
    outputs; the leaf copies of states and inputs the executor makes are found too,
    harmlessly). The executor uses it for steps that are not ``nn.Module``s; the probe with
    no limit."""
    from collections import deque

    seen, out = set(), []
    queue = deque(t.grad_fn for t in tensors if t.grad_fn is not None)
    while queue and len(seen) < limit:
        fn = queue.popleft()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None:
            out.append(var)
        queue.extend(f for f, _ in fn.next_functions)
    return out


class _GradStash:
    """The ``.grad`` of some tensors before a backward, to put back if it fails midway: a
    gradient that was None is set back to None; an existing one is cloned (one parameter-
    gradient's worth of memory, held while the backward runs) and copied back in place."""

    __slots__ = ("saved",)

    def __init__(self, tensors):
        seen, saved = set(), []
        for t in tensors:
            if id(t) in seen:
                continue
            seen.add(id(t))
            g = t.grad
            saved.append((t, g, None if g is None else g.detach().clone()))
        self.saved = saved

    def restore(self):
        for t, g, copy in self.saved:
            if copy is None:
                t.grad = None
            elif t.grad is g and g.shape == copy.shape:
                with torch.no_grad():
                    g.copy_(copy)
            else:
                t.grad = copy


_GRAD_ONLY = (
    "membptt: torch.autograd.grad(...) (or backward(inputs=...)) cannot run a membptt backward: "
    "the plan's recomputation accumulates the step's parameter gradients into .grad, as "
    "reentrant torch.utils.checkpoint does (a documented limitation, docs/executor.md, "
    "'Limitations'). Call loss.backward() (after optimizer.zero_grad()) and read p.grad")


class _XGradSink:
    """Post-accumulate hook of an input leaf: copy its gradient into ``ex.gx[k][t]``, free it."""

    __slots__ = ("ex", "k", "t")

    def __init__(self, ex, k, t):
        self.ex, self.k, self.t = ex, k, t

    def __call__(self, leaf):
        gx = self.ex.gx
        if gx is not None:  # (None outside an executor's backward: the grad stays on the leaf)
            gx[self.k][self.t].copy_(leaf.grad)
            leaf.grad = None


class _BPTTFunction(torch.autograd.Function):
    """``apply(ex, params, dummy, *state0, *inputs, *params)``: the parameters are inputs only
    so that ``torch.autograd.grad(loss, params)`` reaches this backward and gets a message
    that says what to do (their gradients are accumulated, never returned)."""

    @staticmethod
    def forward(ctx, ex, params, dummy, *tensors):
        ctx.set_materialize_grads(False)
        ex.forward()
        ctx.ex = ex
        ctx.params = params
        ctx.n_state = len(ex.state0)
        out = (ex.loss_sum,) + tuple(t.detach() for t in ex.final)
        return out

    @staticmethod
    def backward(ctx, gloss, *gfinal):
        ex = _backward_checks(ctx, "membptt.bptt")
        g0, gx = ex.backward_phase(gloss, gfinal, ctx.params)
        return _input_grads(ctx, ex, g0, gx)


def _backward_checks(ctx, what):
    ex = ctx.ex
    if ex is None:
        raise RuntimeError(f"{what}: backward ran twice through the same call (the "
                           "plan's states are consumed by the first backward)")
    if torch.is_grad_enabled():
        raise RuntimeError(f"{what} does not support create_graph=True "
                           "(higher-order gradients)")
    if not torch.autograd._is_checkpoint_valid():
        raise RuntimeError(_GRAD_ONLY)
    ctx.ex = None
    return ex


def _input_grads(ctx, ex, g0, gx):
    n = ctx.n_state
    g0 = list(g0) if g0 is not None else [None] * n
    gx = list(gx) if gx is not None else [None] * len(ex.inputs)
    return (None, None, None, *g0, *gx, *([None] * len(ctx.params or ())))


class _ScanFunction(torch.autograd.Function):
    """Outputs mode (:func:`membptt.scan`, :func:`membptt.wrap`): ``apply(ex, params, dummy,
    *state0, *inputs, *params) -> (ys, *h_T)``; backward receives ``dL/dys`` and ``dL/dh_T``.
    ``ex.ys_out`` (optional) is the tensor to return when ``ex.ys`` is a time-major view of it
    (batch-first outputs); its gradient is viewed the same way."""

    @staticmethod
    def forward(ctx, ex, params, dummy, *tensors):
        ctx.set_materialize_grads(False)
        ex.forward()
        ctx.ex = ex
        ctx.params = params
        ctx.n_state = len(ex.state0)
        ys, ex.ys = (ex.ys if ex.ys_out is None else ex.ys_out), None
        ctx.batch_first = ex.ys_out is not None
        ex.ys_out = None
        return (ys,) + tuple(t.detach() for t in ex.final)

    @staticmethod
    def backward(ctx, gys, *gfinal):
        ex = _backward_checks(ctx, "membptt.scan")
        if gys is not None and ctx.batch_first:
            gys = gys.transpose(0, 1)
        ex.gys = gys
        g0, gx = ex.backward_phase(None, gfinal, ctx.params)
        return _input_grads(ctx, ex, g0, gx)


# -- public API -----------------------------------------------------------------------------------

def _as_tensors(obj, what):
    if isinstance(obj, torch.Tensor):
        return (obj,), True
    if isinstance(obj, (tuple, list)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        return tuple(obj), False
    raise ValueError(f"expected {what} to be a tensor or a non-empty tuple of tensors, got "
                     f"{type(obj).__name__}")


def bptt(step, state0, inputs, plan, *, fused: bool = True, segments: bool | None = None,
         preserve_rng_state: bool = True, return_state: bool = False,
         stats: ExecStats | None = None):
    """Sum of the step losses over the sequence; its ``backward()`` executes ``plan``.

    Args:
        step: ``step(state, x_t) -> (new_state, loss_t)``; a callable, usually an ``nn.Module``
            (its parameters are captured, gradients accumulate into their ``.grad``). Optional
            attributes: ``deterministic`` (bool: consumes no random numbers),
            ``advance(state, xs, need_loss) -> (state, loss_sum or None)`` (fused graph-free
            steps; with a ``chunk`` keyword its calls are planned, module docstring) and
            ``segment(state, xs) -> (state, loss_sum)`` (fused steps with graph); both used
            only when ``deterministic``.
        state0: the initial state ``h_0``: a floating tensor or a (nested) tuple/list/dict of
            them.
        inputs: a tensor or a tuple of tensors with time on dim 0 (``x_t = inputs[t - 1]``, or
            the tuple of the slices). Its length must equal ``plan.seq_len``.
        plan: a ``membptt.Plan`` (or a sequence of ``membptt.planning.ops`` ops).
        fused: use ``step.advance`` for graph-free runs when possible.
        segments: use ``step.segment`` for chains of stored internal states. None (default):
            exactly when the plan was planned on fused blocks (``plan.segment_ends``), so the
            executed calls and bytes are the priced ones; True: also for other plans (adjacent
            linked graph forwards are merged without limit; a stepped plan's byte budget then
            no longer holds); False: never.
        preserve_rng_state: replay the RNG on recomputation (skipped for deterministic steps).
        return_state: also return the final state ``h_T`` (gradients flow into it).
        stats: an :class:`ExecStats` to fill with what was executed.

    Returns:
        the 0-dim summed loss (and ``h_T`` with ``return_state=True``). Under ``no_grad`` every
        step runs graph-free (fused when possible) and nothing is stored.
    """
    ops, T, _ = plan_ops(plan)
    ex = Executor(step, state0, inputs, seq_len=T, fused=fused, segments=segments is not False,
                  preserve_rng_state=preserve_rng_state, stats=stats)
    if not torch.is_grad_enabled():
        loss = ex.eval_forward()
        return (loss, ex.user(ex.cursor)) if return_state else loss
    # ex.segments: the step can run segments (and they were not switched off); None: as priced
    ex.program = compiled(plan, segments=(segments if ex.segments else False))
    ex.run_cap = getattr(getattr(plan, "prediction", None), "run_cap", None)
    dummy = torch.empty(0, requires_grad=True)
    params = module_params(step)
    out = _BPTTFunction.apply(ex, params, dummy, *ex.state0, *ex.inputs, *(params or ()))
    loss = out[0]
    if return_state:
        return loss, ex.user(tuple(out[1:]))
    return loss


def _takes_chunk(advance) -> bool:
    """Whether ``advance`` takes a ``chunk`` keyword (a planned chunk length)."""
    try:
        return "chunk" in inspect.signature(advance).parameters
    except (TypeError, ValueError):
        return False


def module_params(step) -> tuple | None:
    """The parameters requiring grad of an ``nn.Module`` step (None for another callable: the
    executor then finds them by walking the graph of the first chain it backpropagates)."""
    if isinstance(step, torch.nn.Module):
        return tuple(p for p in step.parameters() if p.requires_grad)
    return None


def plain_bptt(step, state0, inputs):
    """Reference: plain autograd BPTT (every step's graph kept); returns (loss, h_T)."""
    h = state0
    total = None
    if isinstance(inputs, torch.Tensor):
        xsteps = inputs.unbind(0)
    else:
        xsteps = tuple(zip(*[t.unbind(0) for t in inputs]))
    for x in xsteps:
        h, loss = step(h, x)
        if isinstance(state0, tuple) and type(h) is not tuple:
            h = tuple(h)
        total = loss if total is None else total + loss
    return total, h
