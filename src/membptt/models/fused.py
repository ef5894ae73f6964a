"""Adapter: a user's own ``nn.LSTM`` / ``nn.GRU`` + head + loss as a ``membptt.bptt`` step.

A PyTorch user who trains ``nn.LSTM`` today has a module, a head and a loss, not a cell
function. :class:`FusedRNNStep` wraps exactly those, without rewriting anything as a cell::

    lstm = nn.LSTM(256, 256, num_layers=1)            # the user's module (time-major or not)
    head = nn.Linear(256, 256)
    step = membptt.models.FusedRNNStep(lstm, head)    # loss: summed cross-entropy by default
    state0 = step.initial_state(batch=64)             # (h, c), each (num_layers, B, H)
    costs = membptt.probe(step, state0, (x, y))       # x: (T, B, 256) time-major, y: (T, B)
    plan = membptt.plan("msm", T, memory="5%", costs=costs)
    loss = membptt.bptt(step, state0, (x, y), plan); loss.backward()

Every call runs the user's module itself: one time step is the module on a length-1 sequence,
a graph-free run (``advance``) and a segment with graph (``segment``) are one call over many
steps (oneDNN on CPU, cuDNN on CUDA). Parameters, ``state_dict`` and optimizers stay the user's.

Inputs (the executor slices time on dim 0):

* ``(x, y)`` or ``(x, y, *extras)``, each **time-major** ``(T, B, ...)``: ``x`` is
  ``(T, B, input_size)``, ``y`` whatever ``loss_fn`` takes per step (``(T, B)`` class indices
  for the default), each extra ``(T, B, ...)`` (masks, weights, per-step flags). Data in the
  module's own layout go through :meth:`FusedRNNStep.inputs`: ``step.inputs(x, y, mask)``
  returns time-major views when the module is ``batch_first`` (no copy) and checks the shapes;
  a batch-first tensor passed as time-major is refused naming the layout.
* ``loss_fn(logits, targets, *extras) -> 0-dim summed loss`` over a block of steps: logits are
  ``(n * B, C)``, targets and extras ``(n * B, ...)`` for ``n`` steps flattened the same way. It
  must be a *sum* over the steps (a mean would change with the block length, and the protocol
  check of ``membptt.probe`` catches that). The default is the summed cross-entropy, weighted
  element by element by the one extra when there is one (a mask or weights).
* A loss at the last step only (or at any chosen steps): give the other steps no weight. With
  the default loss either pass targets of ``-100`` (cross-entropy's ``ignore_index``) at every
  other step, or a weight extra that is 1 at the last step and 0 elsewhere::

      w = torch.zeros(T, B); w[-1] = 1               # (B, T) and w[:, -1] if batch_first
      loss = membptt.bptt(step, state0, step.inputs(x, y, w), plan)

  The step never sees ``t``; a per-step flag or weight input is how it knows where it is.
* Unidirectional modules only (a bidirectional RNN cannot be run step by step), no
  ``proj_size``; inter-layer dropout of a multi-layer module in training mode makes the step
  non-deterministic: the executor then runs it step by step with RNG replay, never fused.

A head on *all* the outputs (attention pooling, a mean over time) is not a sum over steps:
use :func:`membptt.wrap` on the module instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fusedcall import check_chunk, run_module

__all__ = ["FusedRNNStep"]


def _sum_cross_entropy(logits, targets, *extras):
    """Summed cross-entropy; with one extra, weighted element by element (a mask, weights)."""
    if not extras:
        return F.cross_entropy(logits, targets, reduction="sum")
    if len(extras) > 1:
        raise ValueError(f"the default loss takes at most one extra input (per-element weights "
                         f"or a mask), got {len(extras)}; pass loss_fn=f(logits, targets, "
                         "*extras) for more")
    w = extras[0]
    if w.shape != targets.shape:
        raise ValueError(f"the default loss's weight extra must match the targets' shape per "
                         f"step, (B,) for (B,) targets; got weights {tuple(w.shape)} for "
                         f"targets {tuple(targets.shape)} (n steps x B flattened)")
    return (F.cross_entropy(logits, targets, reduction="none") * w).sum()


def _shape(t):
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


class FusedRNNStep(nn.Module):
    """A step for :func:`membptt.bptt` around an existing ``nn.LSTM``/``nn.GRU`` (see module)."""

    def __init__(self, rnn: nn.Module, head: nn.Module, loss_fn=None, *, fused_chunk: int = 64):
        super().__init__()
        if not isinstance(rnn, (nn.LSTM, nn.GRU)):
            raise ValueError(f"rnn must be an nn.LSTM or nn.GRU, got {type(rnn).__name__}")
        if rnn.bidirectional:
            raise ValueError("a bidirectional rnn cannot be backpropagated step by step; "
                             "use a unidirectional nn.LSTM/nn.GRU")
        if getattr(rnn, "proj_size", 0):
            raise ValueError(f"nn.LSTM with proj_size={rnn.proj_size} is not supported; use "
                             "proj_size=0")
        if isinstance(fused_chunk, bool) or not isinstance(fused_chunk, int) or fused_chunk < 1:
            raise ValueError(f"fused_chunk must be an integer >= 1, got {fused_chunk!r}")
        if loss_fn is not None and not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        self.rnn = rnn
        self.head = head
        self.loss_fn = loss_fn or _sum_cross_entropy
        self.fused_chunk = fused_chunk
        self.lstm = isinstance(rnn, nn.LSTM)

    @property
    def deterministic(self) -> bool:
        """True when a call consumes no random numbers (no active inter-layer dropout)."""
        return not (self.training and self.rnn.dropout > 0 and self.rnn.num_layers > 1)

    def initial_state(self, batch: int, *, device=None, dtype=None):
        w = next(self.rnn.parameters())
        z = torch.zeros(self.rnn.num_layers, batch, self.rnn.hidden_size,
                        device=device or w.device, dtype=dtype or w.dtype)
        return (z, z.clone()) if self.lstm else z

    # -- inputs and their layout ------------------------------------------------------------
    def inputs(self, x, y, *extras):
        """``(x, y, *extras)`` in the module's layout -> the time-major tuple the executor takes
        (views, no copy: a ``batch_first`` module's ``(B, T, ...)`` tensors are transposed),
        checked: ``x`` ``(.., input_size)``, every tensor with the same ``T`` and ``B``."""
        bf = self.rnn.batch_first
        layout = "(B, T, ...) (batch_first=True)" if bf else "(T, B, ...) (time-major)"
        ts = (x, y) + extras
        names = ["x", "y"] + [f"extras[{k}]" for k in range(len(extras))]
        for n, t in zip(names, ts):
            if not isinstance(t, torch.Tensor) or t.dim() < 2:
                raise ValueError(f"{n} must be a tensor {layout}, got {_shape(t)}")
        if x.dim() != 3 or x.shape[-1] != self.rnn.input_size:
            raise ValueError(f"x must be {layout} with input_size="
                             f"{self.rnn.input_size} features last, got shape {_shape(x)}")
        tb = tuple(x.shape[:2])
        for n, t in zip(names[1:], ts[1:]):
            if tuple(t.shape[:2]) != tb:
                raise ValueError(f"{n} has shape {_shape(t)}, but x has {tb} as its first two "
                                 f"dims {layout}: every input needs the same time and batch "
                                 "dims")
        return tuple(t.transpose(0, 1) for t in ts) if bf else ts

    def _unpack(self, xs, steps: bool, state):
        """``(x, y, extras)`` from the executor's slice, with a clear message for a layout
        mistake; ``steps``: a block (time on dim 0) rather than one step."""
        if not isinstance(xs, (tuple, list)) or len(xs) < 2:
            got = (f"a tensor of shape {_shape(xs)}" if isinstance(xs, torch.Tensor)
                   else f"{type(xs).__name__} of length {len(xs)}"
                   if isinstance(xs, (tuple, list)) else type(xs).__name__)
            raise ValueError("FusedRNNStep takes inputs (x, y) or (x, y, *extras), time-major "
                             f"(T, B, ...) (step.inputs(x, y, ...) makes them), got {got} "
                             + ("per block of steps" if steps else "per step"))
        x, y, *extras = xs
        h = state[0] if self.lstm else state
        B = h.shape[1]
        xdims = 2 + steps
        if not isinstance(x, torch.Tensor) or x.dim() != xdims \
                or x.shape[-1] != self.rnn.input_size:
            raise ValueError(
                f"x_t must be (B, input_size={self.rnn.input_size}) per step (x time-major "
                f"(T, B, {self.rnn.input_size})), got {_shape(x)} "
                + ("per block of steps" if steps else "per step"))
        bdim = 1 if steps else 0
        if x.shape[bdim] != B:
            raise ValueError(
                f"x_t has {x.shape[bdim]} rows but the state has batch {B}: inputs must be "
                "time-major (T, B, ...)"
                + (" while this module is batch_first=True: pass step.inputs(x, y, ...), "
                   "which transposes (B, T, ...) data" if self.rnn.batch_first else
                   " (batch-first data? transpose it, x.transpose(0, 1), or use "
                   "step.inputs)"))
        for n, t in [("y", y)] + [(f"extras[{k}]", e) for k, e in enumerate(extras)]:
            if not isinstance(t, torch.Tensor) or t.dim() < bdim + 1 or t.shape[bdim] != B:
                raise ValueError(f"{n} must have the batch ({B}) on dim {bdim + 1 if steps else 0}"
                                 f" of each step like x (time-major (T, B, ...)), got "
                                 f"{_shape(t)} per {'block' if steps else 'step'}")
        return x, y, extras

    def _call(self, state, xs, need_loss, chunk, steps=True):
        if not steps:
            xs = tuple(t.unsqueeze(0) for t in xs)
        x, y, extras = xs[0], xs[1], xs[2:]
        h = tuple(state) if self.lstm else state
        acc = [None]

        def loss_of(s, out):
            logits = self.head(out)
            e = s + out.shape[0]
            yc = y[s:e]
            loss = self.loss_fn(logits.reshape(-1, logits.shape[-1]),
                                yc.reshape(-1, *yc.shape[2:]),
                                *[t[s:e].reshape(-1, *t.shape[2:]) for t in extras])
            acc[0] = loss if acc[0] is None else acc[0] + loss

        h = run_module(self.rnn, x, h, chunk=chunk, each=loss_of if need_loss else None)
        return h, acc[0]

    def forward(self, state, x_t):
        """One time step: the module on a length-1 sequence, the head and the loss."""
        xs = self._unpack(x_t, False, state)
        return self._call(state, (xs[0], xs[1], *xs[2]), True, 1, steps=False)

    @torch.no_grad()
    def advance(self, state, xs, need_loss: bool = False, chunk: int | None = None):
        """``len(xs)`` graph-free steps in calls of ``chunk`` steps (a planner's choice; None:
        ``fused_chunk``), the head and the loss on each call's outputs."""
        if chunk is not None:
            check_chunk(chunk)
        x, y, extras = self._unpack(xs, True, state)
        return self._call(state, (x, y, *extras), need_loss,
                          self.fused_chunk if chunk is None else chunk)

    def segment(self, state, xs):
        """``len(xs)`` steps with graph in one call: ``(final state, summed loss)``."""
        x, y, extras = self._unpack(xs, True, state)
        return self._call(state, (x, y, *extras), True, x.shape[0])
