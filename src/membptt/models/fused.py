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

Conventions and limits (stated, not hidden):

* inputs are ``(x, y)`` with **time on dim 0** whatever the module's ``batch_first`` (the
  executor slices time on dim 0); ``x`` is ``(T, B, input_size)``, ``y`` whatever ``loss_fn``
  takes per step (``(T, B)`` class indices for the default);
* ``loss_fn(logits, targets) -> 0-dim summed loss`` over a block of steps: logits are
  ``(n * B, C)`` and targets ``(n * B, ...)`` for ``n`` steps flattened; it must be a sum over
  steps (a mean would change with the block length, and the protocol check of
  ``membptt.probe`` catches that);
* unidirectional modules only (a bidirectional RNN cannot be run step by step), no
  ``proj_size``; inter-layer dropout of a multi-layer module in training mode makes the step
  non-deterministic: the executor then runs it step by step with RNG replay, never fused.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FusedRNNStep"]


def _sum_cross_entropy(logits, targets):
    return F.cross_entropy(logits, targets, reduction="sum")


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

    def _call(self, state, x, y, need_loss, chunk):
        rnn = self.rnn
        bf = rnn.batch_first
        h = tuple(state) if self.lstm else state
        total = None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            for s in range(0, x.shape[0], chunk):
                xc = x[s:s + chunk]
                out, h = rnn(xc.transpose(0, 1) if bf else xc, h)
                if bf:
                    out = out.transpose(0, 1)
                if need_loss:
                    logits = self.head(out)
                    yc = y[s:s + chunk]
                    loss = self.loss_fn(logits.reshape(-1, logits.shape[-1]),
                                        yc.reshape(-1, *yc.shape[2:]))
                    total = loss if total is None else total + loss
                del out
        return h, total

    def forward(self, state, x_t):
        """One time step: the module on a length-1 sequence, the head and the loss."""
        x, y = x_t
        h, loss = self._call(state, x.unsqueeze(0), y.unsqueeze(0), True, 1)
        return h, loss

    @torch.no_grad()
    def advance(self, state, xs, need_loss: bool = False):
        """``len(xs)`` graph-free steps in calls of ``fused_chunk`` steps."""
        x, y = xs
        return self._call(state, x, y, need_loss, self.fused_chunk)

    def segment(self, state, xs):
        """``len(xs)`` steps with graph in one call: ``(final state, summed loss)``."""
        x, y = xs
        return self._call(state, x, y, True, x.shape[0])
