"""Run a plan on a real step function, inside autograd: :func:`bptt`.

The user writes one *step*::

    def step(state, x_t):          # state: a tensor or a tuple of tensors; x_t: inputs at time t
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
the losses. Its backward executes the rest. A forward with a graph (``keep="internal"`` or
``"core"``) runs the step under ``enable_grad`` from *detached leaf copies* of ``h_{i-1}`` (and of
``x_i`` when the inputs require grad); ``Backward(i)`` calls ``torch.autograd.backward`` on
``(loss_i, h_i)`` with grad outputs ``(dL, dh_i)``, which accumulates the parameters' ``.grad``
and leaves ``dh_{i-1}`` in the leaves' ``.grad`` (input gradients are moved out by a
post-accumulate hook as soon as they exist). Graph-free forwards run under ``no_grad``.
Storage is shared, never copied: a stored hidden state is the cursor tensor itself; an internal
state is the step's graph plus its outputs, so memory is what the plan's accounting says
(see ``docs/executor.md``).

Chains. When the plan stores the internal states of consecutive steps ``k..j`` and
backpropagates them one after the other (``Backward(j), .., Backward(k)`` adjacent, as every
segment that a DP plan stores whole), step ``i``'s forward reads ``h_{i-1}`` from step
``i-1``'s graph outputs instead of a detached copy, and ``Backward(j)`` backpropagates the whole
chain with one ``torch.autograd.backward`` call (:func:`_link`). That saves the per-call
overhead of one call per step (about 19 % of a backward on CPU), runs the same operations and
frees each step's graph as autograd passes it. Autograd sums the parameter gradients of a
chain in one buffer before adding it to ``.grad``: one parameter-gradient's worth of memory
more, which the probed working set includes.

Fused runs. A step object may offer ``advance(state, xs, need_loss) -> (state, loss_sum|None)``
that performs ``len(xs)`` graph-free steps at once (``xs`` is ``inputs[a-1:b]``, time on dim 0).
The executor uses it for every run of graph-free forwards when the step also says
``step.deterministic`` is true (it must consume no random numbers: a fused run cannot replay
the per-step RNG stream). :class:`membptt.models.LSTMLanguageModel` implements it with a fused
``nn.LSTM`` sharing the cell's weights.

Randomness. With ``preserve_rng_state=True`` (default, unless the step is deterministic) the
CPU and CUDA RNG states are snapshotted with every stored state (and before step 1) and restored
whenever a forward restarts from a stored state, so dropout masks on recomputation equal those
of the first sweep, and of plain BPTT with the same seed. The global RNG state after
``backward`` is what it was before it. Only the default generators are handled.

Autocast state at the call is re-entered for recomputation.

Limitations: gradients flow via ``loss.backward()`` (or ``torch.autograd.backward``);
``torch.autograd.grad(loss, params)`` does not see the parameters (they are closed over by the
step, exactly as with reentrant checkpointing). No double backward; backward runs once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..planning.ops import Backward, Drop, Forward

__all__ = ["bptt", "ExecStats", "compile_plan", "plain_bptt"]

# instruction codes
RUN, GRAPH, BACK, DROP_H, DROP_I = 0, 1, 2, 3, 4
# where a forward reads h_{i-1} from
S_CURSOR, S_H0, S_HIDDEN, S_INTERNAL = 0, 1, 2, 3


@dataclass
class ExecStats:
    """What one :func:`bptt` call executed (filled in when passed as ``stats=``).

    ``step_calls`` counts invocations of ``step(...)`` (graph-free and with graph);
    ``fused_steps`` counts steps advanced by ``step.advance`` (in ``fused_runs`` calls).
    ``step_calls + fused_steps == plan.forward_ops`` always; ``graph_steps ==
    plan.graph_forwards``; ``backward_steps == plan.seq_len``; ``backward_calls`` counts the
    ``torch.autograd.backward`` calls (one per chain of linked steps).
    """

    step_calls: int = 0
    graph_steps: int = 0
    fused_runs: int = 0
    fused_steps: int = 0
    backward_steps: int = 0
    backward_calls: int = 0
    fused: bool = False
    preserve_rng: bool = False

    @property
    def forward_steps(self) -> int:
        return self.step_calls + self.fused_steps


# -- plan compilation --------------------------------------------------------------------------

def _plan_ops(plan):
    """(ops, seq_len) of a Plan or of a plain sequence of ops; ValueError otherwise."""
    if isinstance(plan, str):
        raise ValueError(
            f"expected a membptt Plan (from membptt.plan(...)) or a sequence of ops, got the "
            f"string {plan!r}; build one with membptt.plan({plan!r}, seq_len=..., memory=...)")
    ops = getattr(plan, "ops", None)
    if ops is not None and hasattr(plan, "seq_len"):
        return tuple(ops), int(plan.seq_len)
    if isinstance(plan, (list, tuple)) and plan and all(
            isinstance(o, (Forward, Backward, Drop)) for o in plan):
        return tuple(plan), max(o.step for o in plan)
    raise ValueError(
        "expected a membptt Plan (with .ops and .seq_len) or a non-empty sequence of "
        f"Forward/Backward/Drop ops, got {type(plan).__name__}")


def compile_plan(ops, T: int):
    """Validate ``ops`` for ``T`` steps and turn them into instructions.

    Returns ``(program, split)``; ``program[:split]`` is the first sweep (forwards of steps 1..T
    in order) and ``program[split]`` is ``Backward(T)``'s instruction. Graph-free forwards are
    grouped into runs ``(RUN, src, j, a, b, store_hidden)``; a graph forward is
    ``(GRAPH, src, j, i, is_core, linked)``; ``(BACK, i, n)`` backpropagates steps
    ``i, i-1, .., i-n+1`` in one call (``n = 0``: done by an earlier one; see :func:`_link`);
    ``(DROP_H, i)``, ``(DROP_I, i)``.
    """
    def bad(k, msg):
        raise ValueError(f"invalid plan at op {k} ({ops[k]}): {msg}")

    prog: list = []
    hidden: set = set()
    internal: set = set()
    done_internal: set = set()
    cursor = None  # index of the cursor state, valid right after a forward
    core = None
    next_back = T
    split = None
    first_next = 1  # next step the first sweep must run
    run = None  # open run: [RUN, src, j, a, b, store]
    for k, op in enumerate(ops):
        if isinstance(op, Forward):
            i, keep = op.step, op.keep
            if not 1 <= i <= T:
                bad(k, f"step {i} outside 1..{T}")
            if core is not None:
                bad(k, f"a core forward (step {core}) must be followed by its Backward")
            if split is None:
                if i != first_next:
                    bad(k, f"the first sweep must run steps 1..{T} once each in order; "
                           f"expected step {first_next}, got step {i}")
                first_next += 1
            if i > next_back:
                bad(k, f"step {i} was already backpropagated")
            # source of h_{i-1}
            if cursor == i - 1:
                src, j = S_CURSOR, i - 1
            elif i == 1:
                src, j = S_H0, 0
            elif i - 1 in hidden:
                src, j = S_HIDDEN, i - 1
            elif i - 1 in internal:
                src, j = S_INTERNAL, i - 1
            else:
                bad(k, f"reads h_{i - 1}, which is neither the cursor nor stored")
            if keep is None or keep == "hidden":
                if run is not None and src == S_CURSOR and run[4] == i - 1 and not run[5]:
                    run[4] = i
                else:
                    if run is not None:
                        prog.append(tuple(run))
                    run = [RUN, src, j, i, i, False]
                if keep == "hidden":
                    if i in hidden:
                        bad(k, f"h_{i} is already stored")
                    run[5] = True
                    hidden.add(i)
                    prog.append(tuple(run))
                    run = None
            elif keep in ("internal", "core"):
                if run is not None:
                    prog.append(tuple(run))
                    run = None
                if keep == "internal":
                    if i in internal:
                        bad(k, f"I_{i} is already stored")
                    internal.add(i)
                else:
                    core = i
                prog.append((GRAPH, src, j, i, keep == "core"))
            else:
                bad(k, f"unknown keep {keep!r}")
            cursor = i
            continue
        if run is not None:
            prog.append(tuple(run))
            run = None
        cursor = None
        if isinstance(op, Backward):
            i = op.step
            if i != next_back:
                bad(k, f"backwards must run in the order {T}..1; expected B{next_back}")
            if core == i:
                core = None
            elif i in internal:
                internal.discard(i)
                done_internal.add(i)
            else:
                bad(k, f"needs I_{i} in the core or stored")
            if split is None:
                if first_next != T + 1:
                    bad(k, f"the first sweep stopped at step {first_next - 1} of {T}")
                split = len(prog)
            prog.append((BACK, i))
            next_back -= 1
        elif isinstance(op, Drop):
            i = op.step
            if op.kind == "hidden":
                if i not in hidden:
                    bad(k, f"h_{i} is not stored")
                hidden.discard(i)
                prog.append((DROP_H, i))
            elif op.kind == "internal":
                if i in internal:
                    internal.discard(i)
                    prog.append((DROP_I, i))
                elif i in done_internal:
                    done_internal.discard(i)  # freed at its Backward already
                else:
                    bad(k, f"I_{i} is not stored")
            else:
                bad(k, f"unknown drop kind {op.kind!r}")
        else:
            raise ValueError(f"invalid plan: op {k} is {op!r}, not a Forward/Backward/Drop")
    if run is not None:
        prog.append(tuple(run))
    if next_back != 0 or split is None:
        raise ValueError(f"invalid plan: it backpropagates {T - next_back} of {T} steps")
    return _link(prog), split


def _link(prog):
    """Chain consecutive graph forwards whose backwards are adjacent (see module docstring).

    Step ``i``'s graph forward is *linked* (reads ``h_{i-1}`` from the outputs of step ``i-1``'s
    stored graph instead of a detached copy) when the record that ``Backward(i-1)`` consumes
    already exists when that forward runs and ``Backward(i-1)`` is the instruction right
    after ``Backward(i)``. A chain ``j, j-1, .., k`` of linked steps is then backpropagated by
    one ``torch.autograd.backward`` call at ``Backward(j)``: ``(BACK, j, n)`` with
    ``n = j - k + 1``; the chain's later ``Backward`` instructions become ``(BACK, i, 0)``.
    Values, gradients and the order in which memory is freed are those of the unlinked
    program; only the number of backward calls (and their overhead) shrinks.
    """
    prog = list(prog)
    last_graph: dict = {}  # step -> index of its latest graph forward
    consumed: dict = {}  # index of a BACK -> index of the graph forward whose record it uses
    for k, ins in enumerate(prog):
        if ins[0] == GRAPH:
            last_graph[ins[3]] = k
        elif ins[0] == BACK:
            consumed[k] = last_graph.pop(ins[1])
    linked = set()
    for k, ins in enumerate(prog):
        if ins[0] != BACK or ins[1] == 1 or k + 1 >= len(prog):
            continue
        nxt = prog[k + 1]
        if nxt[0] != BACK or nxt[1] != ins[1] - 1:
            continue
        g_hi, g_lo = consumed[k], consumed[k + 1]
        if g_lo < g_hi and not prog[g_lo][4]:  # step i-1's record (not a core) exists then
            linked.add(g_hi)
    out = []
    for k, ins in enumerate(prog):
        if ins[0] == GRAPH:
            out.append(ins[:5] + (k in linked,))
        elif ins[0] == BACK:
            out.append((BACK, ins[1], 1))
        else:
            out.append(ins)
    # chain lengths: walk each group of BACKs from its top
    k = 0
    while k < len(out):
        if out[k][0] != BACK:
            k += 1
            continue
        top, n = k, 1
        while out[consumed[top + n - 1]][5]:  # this step's forward is linked to the next one
            n += 1
        out[top] = (BACK, out[top][1], n)
        for m in range(top + 1, top + n):
            out[m] = (BACK, out[m][1], 0)
        k = top + n
    return tuple(out)


_COMPILED: dict = {}


def _compiled(ops, T):
    key = (id(ops), T)
    hit = _COMPILED.get(key)
    if hit is not None and hit[0] is ops:
        return hit[1]
    res = compile_plan(ops, T)
    if len(_COMPILED) > 64:
        _COMPILED.clear()
    _COMPILED[key] = (ops, res)
    return res


# -- RNG / autocast ----------------------------------------------------------------------------

def _rng_snapshot(cuda_devices):
    return (torch.get_rng_state(),
            [torch.cuda.get_rng_state(d) for d in cuda_devices])


def _rng_restore(snap, cuda_devices):
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


# -- the interpreter -----------------------------------------------------------------------------

def _describe(t):
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


class _Executor:
    """Holds everything one bptt call needs between the first sweep and the backward."""

    def __init__(self, step, state0, single, inputs, single_input, T, program, split, *,
                 fused, preserve_rng, stats):
        self.step = step
        self.single = single  # state is one tensor (not a tuple)
        self.state0 = state0  # tuple
        self.inputs = inputs  # tuple
        self.single_input = single_input
        self.T = T
        self.program = program
        self.split = split
        self.fused = fused
        self.preserve = preserve_rng
        self.stats = stats
        self.state0_grad = any(t.requires_grad for t in state0)
        self.x_grad = tuple(t.requires_grad and t.is_floating_point() for t in inputs)
        self.any_x_grad = any(self.x_grad)
        if single_input:
            self.xsteps = inputs[0].detach().unbind(0)
        else:
            self.xsteps = tuple(zip(*[t.detach().unbind(0) for t in inputs]))
        devs = {t.device for t in state0 + inputs if t.device.type == "cuda"}
        self.cuda_devices = sorted(devs, key=str)
        self.autocast = _capture_autocast()
        self.hidden: dict = {}
        self.internal: dict = {}
        self.core = None
        self.cursor = None
        self.rng0 = None
        self.loss_sum = None
        self.dh = None
        self.gloss = None
        self.gx = None
        self.final = None

    # -- state helpers
    def _user(self, h):
        return h[0] if self.single else h

    def _check(self, i, out, loss):
        """First-sweep validation of one step's results; returns the state as a tuple."""
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            got = (f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor)
                   else type(loss).__name__)
            raise ValueError(f"step {i}: expected the step to return a scalar (0-dim) loss "
                             f"tensor, got {got}")
        if self.single:
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"step {i}: expected the state to be a tensor (like state0), "
                                 f"got {type(out).__name__}")
            out = (out,)
        elif not isinstance(out, (tuple, list)) or len(out) != len(self.state0):
            raise ValueError(f"step {i}: expected the state to be a tuple of "
                             f"{len(self.state0)} tensors (like state0), got "
                             f"{type(out).__name__}"
                             + (f" of length {len(out)}" if isinstance(out, (tuple, list))
                                else ""))
        for k, (t, r) in enumerate(zip(out, self.state0)):
            if (not isinstance(t, torch.Tensor) or t.shape != r.shape or t.dtype != r.dtype
                    or t.device != r.device):
                got = _describe(t) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(
                    f"step {i}: state element {k} changed: expected {_describe(r)} (as in "
                    f"state0), got {got}; the state must keep its shapes, dtypes and devices")
        return tuple(out)

    def _source(self, src, j):
        if src == S_CURSOR:
            return self.cursor
        if src == S_HIDDEN:
            h, snap = self.hidden[j]
        elif src == S_INTERNAL:
            rec = self.internal[j]
            h, snap = rec[4], rec[5]
        else:
            h, snap = self.state0, self.rng0
        if snap is not None:
            _rng_restore(snap, self.cuda_devices)
        return h

    def _snap(self):
        return _rng_snapshot(self.cuda_devices) if self.preserve else None

    # -- instructions
    def _run(self, ins, first):
        _, src, j, a, b, store = ins
        h = self._source(src, j)
        step = self.step
        stats = self.stats
        with torch.no_grad():
            if self.fused:
                if self.single_input:
                    xs = self.inputs[0][a - 1:b]
                else:
                    xs = tuple(t[a - 1:b] for t in self.inputs)
                out, loss = step.advance(self._user(h), xs, first)
                stats.fused_runs += 1
                stats.fused_steps += b - a + 1
                if first:
                    h = self._check(b, out, loss)
                    self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
                else:
                    h = (out,) if self.single else tuple(out)
            elif first:
                xsteps = self.xsteps
                for i in range(a, b + 1):
                    out, loss = step(self._user(h), xsteps[i - 1])
                    h = self._check(i, out, loss)
                    self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
                stats.step_calls += b - a + 1
            else:
                xsteps = self.xsteps
                if self.single:
                    hh = h[0]
                    for i in range(a, b + 1):
                        hh = step(hh, xsteps[i - 1])[0]
                    h = (hh,)
                else:
                    for i in range(a, b + 1):
                        h = step(h, xsteps[i - 1])[0]
                    if type(h) is not tuple:
                        h = tuple(h)
                stats.step_calls += b - a + 1
        if store:
            self.hidden[b] = (h, self._snap())
        self.cursor = h

    def _graph_step(self, h, i, linked=None):
        """Run step i with its graph; returns the record ``(hin, xleaf, out, loss)``.

        ``h`` (tuple) is ``h_{i-1}``; the step reads a detached leaf copy of it (``hin``), or,
        with ``linked`` (the outputs of step i-1's stored graph), those outputs themselves, so
        the two graphs form one chain (``hin`` is then None).
        """
        if linked is not None:
            hin, h = None, linked
        elif i > 1 or self.state0_grad:
            hin = h = tuple(t.detach().requires_grad_() for t in h)
        else:
            hin = h
        x = self.xsteps[i - 1]
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
                    leaf.register_post_accumulate_grad_hook(_XGradSink(self, k, i - 1))
        with torch.enable_grad():
            out, loss = self.step(h[0] if self.single else h, x)
        return hin, xleaf, out, loss

    def _graph(self, ins, first):
        _, src, j, i, is_core, linked = ins
        h = self._source(src, j)  # (also restores the RNG state when restarting)
        if linked:
            linked = self.internal[i - 1][2]
        hin, xleaf, out, loss = self._graph_step(h, i, linked or None)
        if first:
            out = self._check(i, out, loss)
            ld = loss.detach()
            self.loss_sum = ld if self.loss_sum is None else self.loss_sum + ld
        elif self.single:
            out = (out,)
        elif type(out) is not tuple:
            out = tuple(out)
        self.stats.step_calls += 1
        self.stats.graph_steps += 1
        cur = tuple(t.detach() for t in out)
        rec = (hin, xleaf, out, loss, cur, None)
        if is_core:
            self.core = (i, rec)
        else:
            self.internal[i] = rec[:5] + (self._snap(),)
        self.cursor = cur

    def _back(self, ins):
        _, i, n = ins
        if n == 0:
            return  # backpropagated by the chain's first Backward
        recs = []
        for s in range(i, i - n, -1):
            if self.core is not None and self.core[0] == s:
                recs.append(self.core[1])
                self.core = None
            else:
                recs.append(self.internal.pop(s))
        self._back_chain(recs, i - n + 1)

    def _back_chain(self, recs, low):
        """Backpropagate a chain of records (steps ``low+len(recs)-1`` down to ``low``)."""
        tensors, grads = [], []
        if self.gloss is not None:
            for rec in recs:
                if rec[3].requires_grad:
                    tensors.append(rec[3])
                    grads.append(self.gloss)
        dh = self.dh
        if dh is not None:
            for o, d in zip(recs[0][2], dh):
                if d is not None and o.requires_grad:
                    tensors.append(o)
                    grads.append(d)
        hin = recs[-1][0]
        n = len(recs)
        self.dh = None
        del dh, recs[:]  # only the graphs hold the chain now; they free as backward goes
        if tensors:
            torch.autograd.backward(tensors, grads)
        del tensors, grads
        if low > 1 or self.state0_grad:
            self.dh = tuple(t.grad for t in hin)
        self.stats.backward_steps += n
        self.stats.backward_calls += 1

    def _exec(self, lo, hi, first):
        prog = self.program
        for k in range(lo, hi):
            ins = prog[k]
            code = ins[0]
            if code == RUN:
                self._run(ins, first)
            elif code == GRAPH:
                self._graph(ins, first)
            elif code == BACK:
                self.cursor = None
                self._back(ins)
            elif code == DROP_H:
                del self.hidden[ins[1]]
            else:
                del self.internal[ins[1]]

    # -- phases
    def forward(self):
        self.rng0 = self._snap()
        self._exec(0, self.split, True)
        self.final = self.cursor

    def eval_forward(self):
        """All steps graph-free (under no_grad): the loss only."""
        self.rng0 = None
        ins = (RUN, S_H0, 0, 1, self.T, False)
        self._run(ins, True)
        return self.loss_sum

    def backward(self, gloss, gfinal):
        self.gloss = gloss
        if any(g is not None for g in gfinal):
            self.dh = tuple(gfinal)
        if self.any_x_grad:
            self.gx = [torch.zeros_like(t) if g else None
                       for t, g in zip(self.inputs, self.x_grad)]
        self.cursor = None
        self.final = None
        devices = self.cuda_devices
        with torch.random.fork_rng(devices=devices, enabled=self.preserve), \
                _autocast_ctx(self.autocast):
            self._exec(self.split, len(self.program), False)
        g0 = self.dh if self.state0_grad else None
        gx = self.gx
        self.dh = self.gx = None
        self.hidden.clear()
        self.internal.clear()
        return g0, gx


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
    @staticmethod
    def forward(ctx, ex, dummy, *tensors):
        ctx.set_materialize_grads(False)
        ex.forward()
        ctx.ex = ex
        ctx.n_state = len(ex.state0)
        out = (ex.loss_sum,) + tuple(t.detach() for t in ex.final)
        return out

    @staticmethod
    def backward(ctx, gloss, *gfinal):
        ex = ctx.ex
        if ex is None:
            raise RuntimeError("membptt.bptt: backward ran twice through the same call (the "
                               "plan's states are consumed by the first backward)")
        if torch.is_grad_enabled():
            raise RuntimeError("membptt.bptt does not support create_graph=True "
                               "(higher-order gradients)")
        ctx.ex = None
        g0, gx = ex.backward(gloss, gfinal)
        n = ctx.n_state
        g0 = list(g0) if g0 is not None else [None] * n
        gx = list(gx) if gx is not None else [None] * len(ex.inputs)
        return (None, None, *g0, *gx)


# -- public API -----------------------------------------------------------------------------------

def _as_tensors(obj, what):
    if isinstance(obj, torch.Tensor):
        return (obj,), True
    if isinstance(obj, (tuple, list)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        return tuple(obj), False
    raise ValueError(f"expected {what} to be a tensor or a non-empty tuple of tensors, got "
                     f"{type(obj).__name__}")


def _executor(step, state0, inputs, T, program, split, fused, preserve_rng_state, stats):
    s0, single = _as_tensors(state0, "state0")
    for k, t in enumerate(s0):
        if not t.is_floating_point():
            raise ValueError(f"expected floating-point state tensors, got state0[{k}] with "
                             f"dtype {t.dtype}")
    xs, single_in = _as_tensors(inputs, "inputs")
    for k, t in enumerate(xs):
        if t.dim() == 0 or (T is not None and t.shape[0] != T):
            n = "a 0-dim tensor" if t.dim() == 0 else f"{t.shape[0]} time steps (dim 0)"
            raise ValueError(f"inputs{'' if single_in else f'[{k}]'} has {n}, but the plan is "
                             f"for seq_len={T}: expected {T} time steps")
    if len({t.shape[0] for t in xs}) != 1:
        raise ValueError("expected every input tensor to have the same length on dim 0 "
                         f"(time), got {[t.shape[0] for t in xs]}")
    if T is None:
        T = xs[0].shape[0]
    deterministic = bool(getattr(step, "deterministic", False))
    use_fused = bool(fused) and deterministic and callable(getattr(step, "advance", None))
    preserve = bool(preserve_rng_state) and not deterministic
    if stats is None:
        stats = ExecStats()
    stats.fused, stats.preserve_rng = use_fused, preserve
    return _Executor(step, s0, single, xs, single_in, T, program, split, fused=use_fused,
                     preserve_rng=preserve, stats=stats)


def _prepare(step, state0, inputs, plan, fused, preserve_rng_state, stats):
    ops, T = _plan_ops(plan)
    ex = _executor(step, state0, inputs, T, None, None, fused, preserve_rng_state, stats)
    ex.program, ex.split = _compiled(ops, T)
    return ex


def bptt(step, state0, inputs, plan, *, fused: bool = True, preserve_rng_state: bool = True,
         return_state: bool = False, stats: ExecStats | None = None):
    """Sum of the step losses over the sequence; its ``backward()`` executes ``plan``.

    Args:
        step: ``step(state, x_t) -> (new_state, loss_t)``; a callable, usually an ``nn.Module``
            (its parameters are captured, gradients accumulate into their ``.grad``). Optional
            attributes: ``deterministic`` (bool: consumes no random numbers) and
            ``advance(state, xs, need_loss) -> (state, loss_sum or None)`` (fused graph-free
            steps; used only when ``deterministic``).
        state0: the initial state ``h_0``: a floating tensor or a tuple of them.
        inputs: a tensor or a tuple of tensors with time on dim 0 (``x_t = inputs[t - 1]``, or
            the tuple of the slices). Its length must equal ``plan.seq_len``.
        plan: a ``membptt.Plan`` (or a sequence of ``membptt.planning.ops`` ops).
        fused: use ``step.advance`` for graph-free runs when possible.
        preserve_rng_state: replay the RNG on recomputation (skipped for deterministic steps).
        return_state: also return the final state ``h_T`` (gradients flow into it).
        stats: an :class:`ExecStats` to fill with what was executed.

    Returns:
        the 0-dim summed loss (and ``h_T`` with ``return_state=True``). Under ``no_grad`` every
        step runs graph-free (fused when possible) and nothing is stored.
    """
    ex = _prepare(step, state0, inputs, plan, fused, preserve_rng_state, stats)
    if not torch.is_grad_enabled():
        loss = ex.eval_forward()
        return (loss, ex._user(ex.cursor)) if return_state else loss
    dummy = torch.empty(0, requires_grad=True)
    out = _BPTTFunction.apply(ex, dummy, *ex.state0, *ex.inputs)
    loss = out[0]
    if return_state:
        return loss, (out[1] if ex.single else tuple(out[1:]))
    return loss


def plain_bptt(step, state0, inputs):
    """Reference: plain autograd BPTT (every step's graph kept); returns (loss, h_T)."""
    single = isinstance(state0, torch.Tensor)
    h = state0
    total = None
    if isinstance(inputs, torch.Tensor):
        xsteps = inputs.unbind(0)
    else:
        xsteps = tuple(zip(*[t.unbind(0) for t in inputs]))
    for x in xsteps:
        h, loss = step(h, x)
        if not single and type(h) is not tuple:
            h = tuple(h)
        total = loss if total is None else total + loss
    return total, h
