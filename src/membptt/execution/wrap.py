"""Drop-ins for losses that are not a sum over steps: :func:`wrap` and :func:`scan`.

:func:`membptt.bptt` needs the loss as a sum of per-step losses. Many models have a head on
*all* the outputs instead (attention pooling, a mean over time, the last output only, a CTC
loss): ``out, h = rnn(x); loss = head(out)``. For those, membptt runs the recurrence itself and
hands the outputs to the caller::

    lstm = membptt.wrap(nn.LSTM(256, 256, num_layers=2), memory="64MiB")
    out, (h_n, c_n) = lstm(x)                 # as nn.LSTM: same arguments, same outputs
    loss = head(out, h_n); loss.backward()    # backward runs a membptt plan

    ys, h_T = membptt.scan(step, state0, xs, memory="64MiB")    # step(h, x_t) -> (h, y_t)

How. The outputs ``y_t`` are what the caller differentiates, so the gradient that reaches the
recurrence is ``dL/dy_t`` for every step plus ``dL/dh_T``. The loss of step ``t`` is then
``<y_t, dL/dy_t>`` (its gradient with respect to everything before it is exactly what plain
backpropagation sends through ``y_t``), with ``dL/dh_T`` entering at step ``T``: a sum over
steps, which is what the paper's plans (Gruslys et al. 2016, arXiv:1606.03401, Sec. 3) are made
for. The forward is the plan's **first sweep** (steps 1..T once each, in order: graph-free runs,
fused when the step can, storing the plan's checkpoints and, at the end, its stored internal
states); it writes every ``y_t`` into the output tensor and keeps no graph over the sequence.
The backward executes the rest of the plan, each record's outputs receiving their slice of
``dL/dys`` (:class:`~membptt.execution.executor.Executor` in outputs mode). No extra forward is
run: the first sweep *is* the forward. With ``defer=True`` (default) the graph forwards the first
sweep would store run graph-free too and are rebuilt when the backward starts: between forward
and backward, while the caller's head runs, only hidden-state checkpoints are held.

Planning. The first call for an input signature (length, batch, dtype, device, training mode)
probes the step (:func:`membptt.probe` on a twin whose loss is ``<y_t, w_t>`` for a fixed
``w``: the same graph, stored bytes and working set as the outputs mode) and plans with
``membptt.plan(strategy, T, memory=memory, costs=...)`` (``"msm"`` on fused blocks, the block
length chosen by the planner, by default); later calls reuse the plan. What was picked is in
``.info`` (wrap) or the ``info=`` dict (scan) and is logged on the ``"membptt"`` logger.

What the budget covers. ``memory`` bounds what the plan holds: stored hidden states, stored
internal states and the working set of one backward (its graph, its temporaries and the
parameter gradients). The outputs ``ys`` (``T`` steps of outputs), their incoming gradient
``dL/dys`` and the gradient of ``x`` are the caller's tensors, as large as with plain autograd,
and are not in the budget; nor is the head's graph.
"""

from __future__ import annotations

import inspect
import logging
import time
import weakref

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from ..models.fusedcall import check_chunk, run_module
from .compile import Graph
from .executor import Executor, _ScanFunction, compiled, module_params
from .probe import check_min_seconds, measure_step

__all__ = ["wrap", "scan", "WrappedRNN"]

log = logging.getLogger("membptt")

DEFAULT_STRATEGY = "msm"
#: steps per graph-free call where no plan set a cap (as the shipped models' ``fused_chunk``)
UNPLANNED_CHUNK = 64


# -- the steps ---------------------------------------------------------------------------------

class _RNNOutputStep:
    """Outputs-mode step around a user's ``nn.LSTM``/``nn.GRU``/``nn.RNN``: ``step(state, x_t)
    -> (state, y_t)``; ``advance(state, xs, out, chunk=None)`` (graph-free, in calls of
    ``chunk`` steps, the outputs written into ``out`` or handed to it) and ``segment(state, xs)
    -> (state, ys)`` (one call with graph). ``xs`` is time-major; the module is called in its
    own layout. ``chunk`` (the constructor's): None, the calls are planned (the executor passes
    each run's ``chunk``; :data:`UNPLANNED_CHUNK` steps when it passes none); an int, every
    graph-free call is at most that many steps whatever is passed (an expert's fixed split)."""

    def __init__(self, rnn: nn.RNNBase, chunk: int | None):
        self.rnn, self.chunk, self.bf = rnn, chunk, rnn.batch_first

    @property
    def deterministic(self) -> bool:
        r = self.rnn
        return not (r.training and r.dropout > 0 and r.num_layers > 1)

    def _outputs(self, x, h, chunk=None):
        outs = []
        h = run_module(self.rnn, x, h, chunk=chunk, each=lambda s, o: outs.append(o))
        return outs, h

    def __call__(self, state, x_t):
        outs, h = self._outputs(x_t.unsqueeze(0), state)
        return h, outs[0][0]

    def advance(self, state, xs, out=None, chunk=None):
        """``out``: the tensor to write the outputs into (the first sweep), a callable
        ``each(s, outputs)`` given each call's time-major outputs (``s``: the offset of its
        first step), or None/False (recomputation: the executor's graph-free runs pass
        ``need_loss=False``). ``chunk``: steps per call."""
        if isinstance(out, torch.Tensor):
            def each(s, o):
                out[s:s + o.shape[0]].copy_(o)
        else:
            each = out if callable(out) else None
        if self.chunk is not None:
            chunk = self.chunk
        elif chunk is None:
            chunk = UNPLANNED_CHUNK
        with torch.no_grad():
            h = run_module(self.rnn, xs, state, chunk=chunk, each=each)
        return h, None

    def segment(self, state, xs):
        outs, h = self._outputs(xs, state)
        return h, outs[0]


class _Dot(torch.autograd.Function):
    """``<ys, w>`` as the probe's twin of an outputs-mode record: it keeps ``ys`` alive (the
    outputs mode keeps a record's outputs as the record's own; saving an input copies
    nothing, and where the module's backward saves its output already it is the same
    storage), and its backward sends ``dL/dys`` without new storage where it can. With the
    probe's ``dL = 1`` (a CPU scalar) that is ``w`` itself, as the outputs mode sends each
    record a slice of the caller's ``dL/dys``; otherwise ``g * w``, one step's storage
    expanded where ``w`` is constant over time (stride 0 on dim 0, as :func:`_probe_weights`
    makes it). (On CUDA the check would synchronise, so there the twin's backward holds that
    one step, and the module's backward may copy the expanded gradient: an over-count, never
    an under-count.) ``ys`` that is a leaf gets a copy: autograd could keep the view as its
    ``.grad`` and later accumulate into ``w``."""

    @staticmethod
    def forward(ctx, ys, w):
        ctx.save_for_backward(ys, w)
        ctx.view_ok = ys.grad_fn is not None
        return (ys * w).sum()

    @staticmethod
    def backward(ctx, g):
        _, w = ctx.saved_tensors
        if ctx.view_ok and g.device.type == "cpu" and g.dim() == 0 and float(g) == 1.0:
            return w, None  # g * w is w itself (a non-leaf's gradient: read only downstream)
        if w.dim() and w.shape[0] > 1 and w.stride(0) == 0:
            return (g * w[:1]).expand_as(w), None
        return g * w, None


def _dot_value(ys, w):
    """``<ys, w>`` without graph; ``w`` constant over time (stride 0 on dim 0, as
    :func:`_probe_weights` makes it) is ``<sum_t y_t, w_1>``, whose temporary is one step's."""
    if w.dim() and w.shape[0] > 1 and w.stride(0) == 0:
        return (ys.sum(0) * w[0]).sum()
    return (ys * w).sum()


class _DotLossTwin:
    """The loss-mode twin of an outputs-mode step for the probe: ``loss_t = <y_t, w_t>`` with
    ``w`` the last input. Same calls, same graph (the outputs mode keeps ``y_t`` as the
    record's output), and the same working set: :class:`_Dot` sends ``dL/dy = w`` as a view,
    as the outputs mode sends a slice of the caller's ``dL/dys``. ``outputs_twin`` tells the
    probe that the ``dL = 1`` it backpropagates the twin with is the twin's own (the outputs
    mode has none), so a working set does not count it; the record's loss, which the outputs
    mode does not hold either, is kept in the count (leaving it out put measured peaks one
    scalar above predictions)."""

    outputs_twin = True

    def __init__(self, inner, single: bool, fused_calls: bool = True):
        self.inner, self.single = inner, single
        self.deterministic = bool(getattr(inner, "deterministic", False))
        if not (fused_calls and callable(getattr(inner, "advance", None))):
            self.advance = None
        if not (fused_calls and callable(getattr(inner, "segment", None))):
            self.segment = None

    def _split(self, xt):
        return (xt[0] if self.single else tuple(xt[:-1])), xt[-1]

    def __call__(self, state, xt):
        x, w = self._split(xt)
        h, y = self.inner(state, x)
        return h, _Dot.apply(y, w)

    def advance(self, state, xs, need_loss=False, chunk=None):  # noqa: F811 (None: inner has none)
        """Graph-free calls of ``chunk`` steps (as the inner step makes them); with
        ``need_loss`` each call's ``<y, w>`` is taken from its outputs as they come, holding
        no more than the outputs mode does beside a call (its outputs go to the caller's
        tensor)."""
        x, w = self._split(xs)
        if not need_loss:
            return self.inner.advance(state, x, None, chunk=chunk)[0], None
        parts = []

        def each(s, o):
            parts.append(_dot_value(o, w[s:s + o.shape[0]]))

        h, _ = self.inner.advance(state, x, each, chunk=chunk)
        return h, (parts[0] if len(parts) == 1 else torch.stack(parts).sum())

    def segment(self, state, xs):  # noqa: F811
        x, w = self._split(xs)
        h, ys = self.inner.segment(state, x)
        return h, _Dot.apply(ys, w)


# -- planning ------------------------------------------------------------------------------------

def _fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _deferred_steps(p, segments, defer) -> int:
    """Steps whose forward with graph the first sweep defers to the start of the backward."""
    if not defer:
        return 0
    prog = compiled(p, segments=segments)
    return sum(ins.steps for ins in prog.instructions[:prog.split] if isinstance(ins, Graph))


def _describe_plan(p, T, memory, probe_s, what, deferred=0, chunk=None):
    k = p.block
    how = {"blocks": f"blocks of {k} steps (fused calls)",
           "chains": f"{len(p.chains)} fused chains"}.get(p.planner, "single steps")
    peak = p.predicted_peak_bytes
    info = {
        "strategy": p.strategy, "planner": p.planner, "seq_len": T, "memory": memory,
        "block": k,
        "forwards_per_step": (p.forward_ops + deferred) / T, "deferred_steps": deferred,
        "predicted_peak_bytes": peak,
        "predicted_seconds": p.predicted_cost if p.costs.hidden_bytes is not None else None,
        "probe_seconds": probe_s, "plan": p,
        "run_cap": getattr(getattr(p, "prediction", None), "run_cap", None),
    }
    if chunk is not None:  # a fixed split: no call is longer, whatever the plan admits
        info["run_cap"] = min(info["run_cap"] or chunk, chunk)
    info["summary"] = (
        f"{what}: T={T}: {p.strategy} on {how}, {(p.forward_ops + deferred) / T:.2f} forwards "
        "per step"
        + (f" ({deferred} rebuilt when backward starts, so that only hidden states are held "
           "in between)" if deferred else "")
        + (f", graph-free calls of at most {min(info['run_cap'], T)} steps"
           if info["run_cap"] else "")
        + (f", predicted peak {_fmt_bytes(peak)}" if peak is not None else "")
        + f" for memory={memory!r} (stored states + working set; the outputs are the caller's)"
        + (f"; probed in {probe_s:.1f} s" if probe_s else ""))
    return info


def _make_plan(twin, state0, inputs, T, memory, strategy, planner, block, costs, repeats, what,
               segments, defer, tuning=None, chunk=None):
    """``(plan, info)``. ``tuning``: None, the planner's choice; else ``(run, params, cuda)``
    to time the candidates of :func:`membptt.execution.tune.candidates` with, ``run(plan)``
    being one forward and backward of the caller's call (:func:`~.tune.time_plans`), the
    fastest kept as :func:`membptt.tune` keeps it (``info["tune"]``)."""
    from .. import plan as make_plan

    t0 = time.perf_counter()
    if T < 3:  # too short to probe or to save anything: keep every step's graph
        p = make_plan("full", T, alpha=1)
        return p, _describe_plan(p, T, memory, 0.0, what, _deferred_steps(p, False, defer))
    probe_s = 0.0
    if costs is None:
        costs = measure_step(twin, state0, inputs, repeats=repeats).costs
        probe_s = time.perf_counter() - t0
    if tuning is None:
        p = make_plan(strategy, T, memory=memory, costs=costs, planner=planner, block=block)
    else:
        from .tune import TUNE_MARGIN, TUNE_ROUNDS, candidates, choose, time_plans

        run, params, cuda = tuning
        t1 = time.perf_counter()
        cands = candidates(strategy, T, memory, costs=costs, planner=planner, block=block)
        times = time_plans(run, [c for _, c in cands], params, cuda, TUNE_ROUNDS,
                           check_min_seconds(None))
        p = choose(cands, times, costs, TUNE_MARGIN, t1)
    info = _describe_plan(p, T, memory, probe_s, what, _deferred_steps(p, segments, defer),
                          chunk)
    info["costs"] = costs
    if tuning is not None:
        tn = info["tune"] = p.info["tune"]
        row = next(r for r in tn["candidates"] if r["picked"])
        n = len(tn["candidates"])
        info["summary"] += (
            "; tuned: the planner's choice is the only candidate (nothing timed)" if n == 1 else
            f"; tuned: timed {n} candidates in {tn['seconds']:.1f} s, "
            + ("kept the planner's choice" if tn["picked"] == tn["planner_choice"] else
               f"picked {tn['picked']} at {row['ratio']:.3f}x the planner's choice"))
    log.info("%s", info["summary"])
    return p, info


def _check_strategy(strategy, memory, what, alt=""):
    from .. import STRATEGIES

    strat = STRATEGIES.get(strategy) if isinstance(strategy, str) else None
    if strat is None:
        raise ValueError(f"{what}: unknown strategy {strategy!r}; valid: "
                         + ", ".join(STRATEGIES))
    if memory is None and getattr(strat, "needs_memory", True):
        raise ValueError(f"{what} needs memory=...{alt}: a byte budget such as '64MiB', a "
                         "percentage such as '5%' or hidden-state units (an int), as for "
                         f"membptt.plan (strategy {strategy!r} plans within a budget)")


def _probe_weights(like, T):
    """``w`` for the twin: fixed values (a private generator: the global RNG is untouched),
    expanded over time (one step's storage)."""
    g = torch.Generator().manual_seed(0x6d656d)
    w = torch.randn(like.shape, generator=g, dtype=torch.float64)
    return w.to(dtype=like.dtype, device=like.device).unsqueeze(0).expand(T, *like.shape)


# -- membptt.wrap ----------------------------------------------------------------------------------

_RNN_TYPES = (nn.LSTM, nn.GRU, nn.RNN)


class WrappedRNN(nn.Module):
    """An ``nn.LSTM``/``nn.GRU``/``nn.RNN`` whose backward runs a membptt plan (see the module
    docstring and :func:`wrap`). ``forward(input, hx=None)`` takes and returns exactly what the
    wrapped module does; ``.rnn`` is the user's module (its parameters, ``state_dict`` and
    optimizer stay the user's); ``.info`` describes the plan of the last call."""

    def __init__(self, rnn, memory, *, strategy: str = DEFAULT_STRATEGY, planner="auto",
                 block=None, costs=None, repeats: int = 5, chunk: int | None = None,
                 defer: bool = True, tune: bool = False):
        super().__init__()
        if not isinstance(rnn, _RNN_TYPES):
            raise ValueError(
                f"membptt.wrap takes an nn.LSTM, nn.GRU or nn.RNN, got {type(rnn).__name__}; "
                "for another recurrence write step(state, x_t) -> (state, y_t) and call "
                "membptt.scan(step, state0, xs, memory=...)")
        if rnn.bidirectional:
            raise ValueError(
                "membptt.wrap cannot run a bidirectional rnn (bidirectional=True): its reverse "
                "direction starts at step T, so there is no single forward sweep from step 1 "
                "to T in which to store checkpoints, and recomputation from a checkpoint "
                "cannot rebuild it. Wrap two unidirectional modules instead, the second run "
                "on input.flip(time dim), and concatenate their outputs (flipping the second "
                "back)")
        _check_strategy(strategy, memory, "membptt.wrap")
        if chunk is not None:
            check_chunk(chunk)
        self.rnn = rnn
        self.memory, self.strategy, self.planner, self.block = memory, strategy, planner, block
        if not isinstance(tune, bool):
            raise ValueError(f"tune must be True or False, got {tune!r}")
        self.repeats, self.chunk, self.defer, self.tune = repeats, chunk, bool(defer), tune
        self._costs = costs
        self._step = _RNNOutputStep(rnn, chunk)
        self._plans: dict = {}
        self._zeros: dict = {}
        self.info: dict | None = None

    # the wrapped module's attributes, for code that reads them
    input_size = property(lambda self: self.rnn.input_size)
    hidden_size = property(lambda self: self.rnn.hidden_size)
    num_layers = property(lambda self: self.rnn.num_layers)
    batch_first = property(lambda self: self.rnn.batch_first)
    bidirectional = property(lambda self: self.rnn.bidirectional)

    @property
    def _lstm(self) -> bool:
        return isinstance(self.rnn, nn.LSTM)

    def _out_size(self) -> int:
        return getattr(self.rnn, "proj_size", 0) or self.rnn.hidden_size

    def _check_hx(self, hx, B, like, unbatched):
        r = self.rnn
        L, H, P = r.num_layers, r.hidden_size, self._out_size()
        shape = (L, H) if unbatched else (L, B, H)
        hshape = (L, P) if unbatched else (L, B, P)
        if self._lstm:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2
                    and all(isinstance(t, torch.Tensor) for t in hx)):
                raise ValueError(f"hx of an nn.LSTM must be a tuple (h_0, c_0) of tensors of "
                                 f"shapes {hshape} and {shape}, got {type(hx).__name__}")
            got = (tuple(hx[0].shape), tuple(hx[1].shape))
            if got != (hshape, shape):
                raise ValueError(f"hx = (h_0, c_0) must have shapes {hshape} and {shape} "
                                 f"(num_layers, batch, hidden), got {got[0]} and {got[1]}")
            return tuple(hx)
        if not isinstance(hx, torch.Tensor) or tuple(hx.shape) != shape:
            got = tuple(hx.shape) if isinstance(hx, torch.Tensor) else type(hx).__name__
            raise ValueError(f"hx of an nn.{type(r).__name__} must be a tensor of shape "
                             f"{shape} (num_layers, batch, hidden), got {got}")
        return hx

    def forward(self, input, hx=None):
        r = self.rnn
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise ValueError("membptt.wrap takes a padded tensor, not a PackedSequence (the "
                             "batch would shrink from step to step): pad it with "
                             "torch.nn.utils.rnn.pad_packed_sequence and mask the loss")
        if not isinstance(input, torch.Tensor) or input.dim() not in (2, 3):
            got = (f"shape {tuple(input.shape)}" if isinstance(input, torch.Tensor)
                   else type(input).__name__)
            raise ValueError("expected input of shape (T, B, input_size)"
                             f"{' (batch_first: (B, T, input_size))' if r.batch_first else ''}"
                             f" or unbatched (T, input_size), got {got}")
        if input.shape[-1] != r.input_size:
            raise ValueError(f"expected input with input_size={r.input_size} features on its "
                             f"last dim, got shape {tuple(input.shape)}")
        params = tuple(p for p in r.parameters() if p.requires_grad)
        needs_grad = torch.is_grad_enabled() and (
            bool(params) or input.requires_grad
            or any(t.requires_grad for t in ((hx,) if isinstance(hx, torch.Tensor)
                                             else (hx or ()))))
        if not needs_grad:  # evaluation: the module itself, nothing to store
            return r(input, hx)
        unbatched = input.dim() == 2
        if unbatched:
            x = input.unsqueeze(1)
        else:
            x = input.transpose(0, 1) if r.batch_first else input
        T, B = x.shape[0], x.shape[1]
        L, H, P = r.num_layers, r.hidden_size, self._out_size()
        if hx is None:
            # zeros as the module makes them, but one element's storage expanded: h_0 is then
            # no state the plan has to hold (a checkpoint's recomputation of its first segment
            # makes its zeros afresh, and so holds none either)
            zero = self._zeros.get((input.dtype, input.device))
            if zero is None:  # made once: no allocation inside an iteration
                zero = torch.zeros((), dtype=input.dtype, device=input.device)
                self._zeros[(input.dtype, input.device)] = zero
            z = zero.expand(L, B, H)
            state0 = (zero.expand(L, B, P), z) if self._lstm else z
        else:
            hx = self._check_hx(hx, B, input, unbatched)
            if unbatched:
                hx = tuple(t.unsqueeze(1) for t in hx) if self._lstm else hx.unsqueeze(1)
            state0 = hx
        step = self._step
        bf_out = r.batch_first and not unbatched
        key = (T, B, input.dtype, input.device, step.deterministic, self.memory,
               self.strategy, self.planner, self.block, self.defer, self.tune)
        hit = self._plans.get(key)
        if hit is None:
            twin = _DotLossTwin(step, single=True)
            w = _probe_weights(torch.empty(B, P, dtype=input.dtype, device=input.device), T)
            s0 = tuple(t.detach() for t in state0) if self._lstm else state0.detach()
            tuning = self._tuning(x, state0, params, w, bf_out) if self.tune else None
            hit = _make_plan(twin, s0, (x.detach(), w), T, self.memory, self.strategy,
                             self.planner, self.block, self._costs, self.repeats, "membptt.wrap",
                             None if step.deterministic else False, self.defer, tuning,
                             self.chunk)
            self._plans[key] = hit
        plan, self.info = hit
        out, final = self._execute(plan, x, state0, params, bf_out)
        if unbatched:
            out = out[:, 0]
            final = tuple(t[:, 0] for t in final)
        return out, (tuple(final) if self._lstm else final[0])

    def _execute(self, plan, x, state0, params, bf_out):
        """``(out, final state as a flat tuple)`` of ``plan`` over the time-major ``x``; ``out``
        batch-first when ``bf_out``."""
        T, B, P = x.shape[0], x.shape[1], self._out_size()
        ex = Executor(self._step, state0, x, seq_len=T, outputs=True)
        ex.defer = self.defer
        if bf_out:
            ex.ys_out = torch.empty(B, T, P, dtype=x.dtype, device=x.device)
            ex.ys = ex.ys_out.transpose(0, 1)
        else:
            ex.ys = torch.empty(T, B, P, dtype=x.dtype, device=x.device)
        ex.program = compiled(plan, segments=None if ex.segments else False)
        ex.run_cap = getattr(getattr(plan, "prediction", None), "run_cap", None)
        dummy = torch.empty(0, requires_grad=True)
        res = _ScanFunction.apply(ex, params, dummy, *ex.state0, x, *params)
        return res[0], res[1:]

    def _tuning(self, x, state0, params, w, bf_out):
        """What :func:`_make_plan` times candidates with: this call's forward and backward on
        detached copies of the input and state (nothing reaches the caller's graph), ``w`` as
        the outputs' incoming gradient."""
        from .tune import _detached

        xd, s0 = _detached(x), _detached(state0)
        # dL/dout as the caller's is: a tensor of its own (w is expanded over time)
        g = (w.transpose(0, 1) if bf_out else w).contiguous()

        def run(p):
            out, _ = self._execute(p, xd, s0, params, bf_out)
            torch.autograd.backward(out, g)

        cuda = [x.device] if x.device.type == "cuda" else []
        # the copies' .grad too: set to None before each timed call, as the parameters'
        leaves = [t for t in (xd, *s0) if t.requires_grad]
        return run, list(params) + leaves, cuda

    def extra_repr(self) -> str:
        s = f"memory={self.memory!r}, strategy={self.strategy!r}"
        if self.info is not None:
            s += f"; last call: {self.info['summary']}"
        return s


def wrap(rnn, memory, *, strategy: str = DEFAULT_STRATEGY, planner="auto", block=None,
         costs=None, repeats: int = 5, chunk: int | None = None, defer: bool = True,
         tune: bool = False) -> WrappedRNN:
    """``rnn`` (an ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN``) as a module with the same call and
    outputs whose backward runs a membptt plan within ``memory``.

    ``out, h_n = wrap(gru, memory="5%")(x, hx)`` (``out, (h_n, c_n)`` for an LSTM) with
    ``num_layers``, ``batch_first``, ``hx`` given or not, unbatched input: as the module. Any
    loss on ``out`` and ``h_n`` works; parameters stay the user's (``.rnn``); under ``no_grad``
    the module runs as is. Args:

        memory: the budget, as for :func:`membptt.plan`: it bounds the stored states and the
            working set, not the outputs (the caller's; see the module docstring).
        strategy: the strategy (default ``"msm"``); planner, block: as :func:`membptt.plan`
            (default: the library picks the planner and the block length); costs: a ``CostModel`` to plan on
            instead of probing (it must be probed with the same batch, dtype and device);
            repeats: the probe's timing repeats; chunk: None (default), graph-free runs are
            made as the fewest calls of at most the plan's ``run_cap`` steps, the longest call
            whose outputs fit beside the plan (``info["run_cap"]``; a call of ``L`` steps
            holds ``L`` steps of outputs before they are copied out); an int, every
            graph-free call is at most that many steps (a fixed split, as before planning).
        defer: the forward keeps no graph at all: the forwards with graph that the plan's
            first sweep would store (e.g. MSM's last segment) run graph-free and are rebuilt
            when the backward starts, so that only hidden-state checkpoints are held while the
            caller's head runs (its peak and the recurrence's then do not add); costs those
            steps one more forward (``info["deferred_steps"]``). ``False``: keep them.
        tune: when planning (the first call per input signature), time the candidate plans
            :func:`membptt.tune` times (the planner's choice, the other planners' plans, the
            checkpoint's own schedules that fit) as real forward and backward calls of this
            module, on detached copies of the input and state, and keep the fastest
            (``info["tune"]``; the parameters' ``.grad`` and the RNG are left as they were).
            Seconds to half a minute, once; the planner's choice is kept unless another is
            at least 2 % faster per round.

    Refused: bidirectional modules (no forward sweep from 1 to T: the message says what to do
    instead), PackedSequence inputs. With inter-layer dropout in training mode the module runs
    step by step with RNG replay (exact gradients of that dropout realisation, not the masks a
    whole-sequence call would draw).
    """
    return WrappedRNN(rnn, memory, strategy=strategy, planner=planner, block=block, costs=costs,
                      repeats=repeats, chunk=chunk, defer=defer, tune=tune)


# -- membptt.scan ----------------------------------------------------------------------------------

_SCAN_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plan_cache(step) -> dict:
    owner, sub = (step.__self__, step.__func__) if inspect.ismethod(step) else (step, None)
    try:
        return _SCAN_PLANS.setdefault(owner, {}).setdefault(sub, {})
    except TypeError:  # not weak-referenceable: plan afresh every call
        return {}


def _signature(tensors):
    return tuple((tuple(t.shape), t.dtype, t.device, t.requires_grad) for t in tensors)


def scan(step, state0, xs, memory=None, *, plan=None, strategy: str = DEFAULT_STRATEGY,
         planner="auto", block=None, costs=None, repeats: int = 5, defer: bool = True,
         tune: bool = False, info: dict | None = None):
    """``(ys, h_T)`` of ``step`` over ``xs``, with a backward that runs a membptt plan.

    ``step(state, x_t) -> (state, y_t)``: ``state`` as for :func:`membptt.bptt` (a tensor or a
    nested tuple/list/dict of them, its structure, shapes, dtypes and devices kept); ``x_t`` is
    ``xs[t-1]`` (or the tuple of slices when ``xs`` is a tuple; time on dim 0); ``y_t`` a
    tensor of the same shape at every step. Returns ``ys`` (``y_1..y_T`` stacked on dim 0) and
    the final state, in the state's structure; any loss on them works. Parameters are what the
    step closes over (an ``nn.Module``'s, or any tensors requiring grad), their ``.grad``
    accumulated by ``loss.backward()``; gradients flow to ``state0`` and ``xs`` when they
    require grad.

    ``memory`` (or a ready ``plan`` for ``len(xs)`` steps) as for :func:`membptt.plan`; it
    bounds stored states plus the working set, not ``ys`` (the caller's). The first call per
    step object and input signature probes the step and plans (``strategy``, ``planner``,
    ``block``, ``costs``, ``repeats``, ``defer``, ``tune`` as :func:`wrap`; with ``tune`` the
    candidates are timed as calls of ``scan`` and a backward from fixed ``dL/dys``); ``info``,
    a dict, receives what was picked. Under ``no_grad`` every step runs graph-free.
    """
    if not isinstance(tune, bool):
        raise ValueError(f"tune must be True or False, got {tune!r}")
    if tune and plan is not None:
        raise ValueError("membptt.scan: tune=True times candidate plans when scan plans; with "
                         "plan=... given there is nothing to choose (pass memory=... instead)")
    if plan is None:
        _check_strategy(strategy, memory, "membptt.scan", " or plan=...")
    seq_len = None
    if plan is not None:
        from .compile import plan_ops

        seq_len = plan_ops(plan)[1]
    # one step call per step: a step's own advance/segment follow bptt's loss protocol
    ex = Executor(step, state0, xs, seq_len=seq_len, fused=False, segments=False, outputs=True)
    ex.defer = bool(defer)
    T = ex.T
    if not torch.is_grad_enabled():
        ex.eval_forward()
        return ex.ys, ex.user(ex.cursor)
    if plan is None:
        cache = _plan_cache(step)
        key = (_signature(ex.state0), _signature(ex.inputs), ex.deterministic, memory,
               strategy, planner, block, ex.defer, tune)
        hit = cache.get(key)
        if hit is None:
            with torch.no_grad(), torch.random.fork_rng(devices=ex.cuda_devices):
                _, y1 = step(ex.user(ex.state0), ex.xsteps[0])
            if not isinstance(y1, torch.Tensor):
                raise ValueError(f"step 1: expected the step to return (state, y_t) with y_t a "
                                 f"tensor, got {type(y1).__name__} as y_t")
            twin = _DotLossTwin(step, single=ex.single_input, fused_calls=False)
            s0 = ex.user(tuple(t.detach() for t in ex.state0))
            ins = tuple(t.detach() for t in ex.inputs) + (_probe_weights(y1, T),)
            tuning = None
            if tune:
                from .tune import _detached, _params

                s0d, xsd, g = _detached(ex.user(ex.state0)), _detached(xs), ins[-1].contiguous()

                def run(p):
                    ys, _ = scan(step, s0d, xsd, plan=p, defer=defer)
                    torch.autograd.backward(ys, g)

                prm, cuda = _params(twin, s0, ins)
                leaves = [t for t in tree_leaves((s0d, xsd))
                          if isinstance(t, torch.Tensor) and t.requires_grad]
                tuning = (run, prm + leaves, cuda)
            hit = _make_plan(twin, s0, ins, T, memory, strategy, planner, block, costs, repeats,
                             "membptt.scan", False, ex.defer, tuning)
            cache[key] = hit
        plan, found = hit
    else:
        found = {"strategy": getattr(plan, "strategy", None), "seq_len": T, "plan": plan,
                 "block": getattr(plan, "block", None), "summary": "membptt.scan: given plan",
                 "deferred_steps": _deferred_steps(plan, False, ex.defer)}
    if info is not None:
        info.clear()
        info.update(found)
    ex.program = compiled(plan, segments=False)
    params = module_params(step)
    dummy = torch.empty(0, requires_grad=True)
    res = _ScanFunction.apply(ex, params, dummy, *ex.state0, *ex.inputs, *(params or ()))
    return res[0], ex.user(tuple(res[1:]))
