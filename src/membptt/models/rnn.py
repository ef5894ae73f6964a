"""LSTM and GRU language-model steps with a per-step loss and a fused graph-free advance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fusedcall import check_chunk, run_module

__all__ = ["RNNLanguageModel", "LSTMLanguageModel", "GRULanguageModel"]

_CELLS = {"lstm": (nn.LSTMCell, nn.LSTM), "gru": (nn.GRUCell, nn.GRU)}
_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class RNNLanguageModel(nn.Module):
    """One step of a recurrent language model, usable as the ``step`` of ``membptt.bptt``.

    ``model(state, (x_t, y_t)) -> (new_state, loss_t)``: input (token ids ``(B,)`` through an
    ``nn.Embedding`` when ``embed=True``, else dense features ``(B, input_size)``), dropout,
    the cell (``nn.LSTMCell``: state ``(h, c)``; ``nn.GRUCell``: state ``h``), dropout, a linear
    head and ``cross_entropy(..., reduction="sum")`` against the targets ``y_t`` ``(B,)``.

    ``segment(state, (xs, ys))`` runs ``len(xs)`` steps *with* graph in one fused call and
    returns the final state and the summed loss (the executor's fused segments).
    ``advance(state, (xs, ys), need_loss)`` runs ``len(xs)`` steps without a graph in one fused
    ``nn.LSTM`` / ``nn.GRU`` call per chunk of ``fused_chunk`` steps (the fused module shares
    the cell's parameter tensors; it is not a registered submodule, so ``parameters()`` and
    ``state_dict()`` are the cell's); with ``need_loss`` the head and the loss run on
    ``loss_chunk`` steps of its outputs at a time. Its transient memory is about
    ``fused_chunk`` steps of outputs plus ``loss_chunk`` steps of logits (twice). A larger
    ``fused_chunk`` costs memory and saves time: on CPU each fused call first reorders the
    weights for oneDNN (about 1.2 ms at hidden 256, about three steps' work). A planner that
    knows the memory it has passes ``advance(..., chunk=c)``: calls of ``c`` steps, the head
    and the loss on each call's outputs in one call (transient: ``c`` steps of outputs and of
    logits). ``segment`` is one call in every grad mode (a reentrant checkpoint's first sweep
    runs it under ``no_grad``, as a user's ``nn.LSTM`` call would). It is exact only without
    active dropout: ``deterministic`` says so, and the executor uses ``advance`` only then.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, vocab_size: int, *,
                 embed: bool = False, dropout: float = 0.0, fused_chunk: int = 64,
                 loss_chunk: int = 16):
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        for name, v in (("fused_chunk", fused_chunk), ("loss_chunk", loss_chunk)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        self.kind = cell
        self.input_size, self.hidden_size, self.vocab_size = input_size, hidden_size, vocab_size
        self.dropout = float(dropout)
        self.fused_chunk = fused_chunk
        self.loss_chunk = loss_chunk
        self.embedding = nn.Embedding(vocab_size, input_size) if embed else None
        cell_cls, fused_cls = _CELLS[cell]
        self.cell = cell_cls(input_size, hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size)
        # the fused module lives outside the module tree (a list hides it from nn.Module)
        self._fused = [fused_cls(input_size, hidden_size)]
        self._sync_fused()

    # -- protocol for membptt.bptt ---------------------------------------------------------
    @property
    def deterministic(self) -> bool:
        """True when a step consumes no random numbers (no active dropout)."""
        return not (self.training and self.dropout > 0.0)

    def initial_state(self, batch: int, *, device=None, dtype=None):
        w = self.cell.weight_hh
        z = torch.zeros(batch, self.hidden_size, device=device or w.device,
                        dtype=dtype or w.dtype)
        return (z, z.clone()) if self.kind == "lstm" else z

    def forward(self, state, x_t):
        x, y = x_t
        if self.embedding is not None:
            x = self.embedding(x)
        if self.dropout > 0.0:
            x = F.dropout(x, self.dropout, self.training)
        state = self.cell(x, state)
        h = state[0] if self.kind == "lstm" else state
        if self.dropout > 0.0:
            h = F.dropout(h, self.dropout, self.training)
        loss = F.cross_entropy(self.head(h), y, reduction="sum")
        return state, loss

    def _sync_fused(self):
        fused = self._fused[0]
        for src, dst in zip(_WEIGHTS, fused._flat_weights_names):
            p = getattr(self.cell, src)
            if fused._parameters.get(dst) is not p:
                setattr(fused, dst, p)
        return fused

    def _fused_call(self, state, xs, need_loss: bool, chunk: int | None,
                    head_chunk: int | None):
        """One pass of the fused module over ``xs = (x, y)`` (time on dim 0) from ``state``:
        ``(final state, summed loss or None)``, in calls of ``chunk`` steps (None: one call),
        the head on ``head_chunk`` steps of each call's outputs at a time (None: all of them);
        with graph when grad is enabled."""
        x, y = xs
        fused = self._sync_fused()
        lstm = self.kind == "lstm"
        h = (state[0].unsqueeze(0), state[1].unsqueeze(0)) if lstm else state.unsqueeze(0)
        acc = [None]

        def loss_of(s, out):
            step = out.shape[0] if head_chunk is None else head_chunk
            for u in range(0, out.shape[0], step):
                logits = self.head(out[u:u + step])
                k = s + u
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       y[k:k + logits.shape[0]].reshape(-1), reduction="sum")
                del logits
                acc[0] = loss if acc[0] is None else acc[0] + loss

        h = run_module(fused, x, h, chunk=chunk, prep=self.embedding,
                       each=loss_of if need_loss else None)
        # squeeze, not select: its backward is a view of the incoming gradient (select_backward
        # allocates a zero-filled copy of it, one more state held at the backward's peak)
        state = (h[0].squeeze(0), h[1].squeeze(0)) if lstm else h.squeeze(0)
        return state, acc[0]

    @torch.no_grad()
    def advance(self, state, xs, need_loss: bool = False, chunk: int | None = None):
        """``len(xs)`` graph-free steps; returns ``(state, summed loss or None)``. ``chunk``:
        steps per fused call, the head on each call's outputs at once (a planner's choice);
        None: calls of ``fused_chunk`` steps, the head on ``loss_chunk`` steps at a time."""
        if not self.deterministic:
            raise RuntimeError("advance() is exact only without active dropout "
                               "(call .eval() or use dropout=0)")
        if chunk is None:
            return self._fused_call(state, xs, need_loss, self.fused_chunk, self.loss_chunk)
        return self._fused_call(state, xs, need_loss, check_chunk(chunk), None)

    def segment(self, state, xs):
        """``len(xs)`` steps *with graph* in one fused call (``nn.LSTM``/``nn.GRU``: oneDNN on
        CPU, cuDNN on CUDA), the head and the summed loss: ``(final state, summed loss)``.
        Exact only without active dropout (the per-step masks could not be replayed)."""
        if not self.deterministic:
            raise RuntimeError("segment() is exact only without active dropout "
                               "(call .eval() or use dropout=0)")
        return self._fused_call(state, xs, True, None, None)

    def extra_repr(self) -> str:
        return (f"dropout={self.dropout}, fused_chunk={self.fused_chunk}, "
                f"loss_chunk={self.loss_chunk}, embed={self.embedding is not None}")


class LSTMLanguageModel(RNNLanguageModel):
    """``nn.LSTMCell`` language-model step; state ``(h, c)``; fused advance via ``nn.LSTM``."""

    def __init__(self, input_size: int, hidden_size: int, vocab_size: int, **kw):
        super().__init__("lstm", input_size, hidden_size, vocab_size, **kw)


class GRULanguageModel(RNNLanguageModel):
    """``nn.GRUCell`` language-model step; state ``h``; fused advance via ``nn.GRU``."""

    def __init__(self, input_size: int, hidden_size: int, vocab_size: int, **kw):
        super().__init__("gru", input_size, hidden_size, vocab_size, **kw)
