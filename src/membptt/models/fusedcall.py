"""One fused ``nn.LSTM``/``nn.GRU`` call over many steps, written once.

The shipped language models (:mod:`.rnn`), the adapter for a user's module (:mod:`.fused`) and
:func:`membptt.wrap` all run a module over a time-major block of steps, in calls of ``chunk``
steps (graph-free runs bound their transient that way) or in one call (a segment with graph),
with the module's own layout and without cuDNN's warning about weights that are not one
contiguous chunk (it copies them: correct, but it warns on every call).
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["check_chunk", "run_module"]


def run_module(rnn, x, h, *, chunk: int | None = None, prep=None, each=None):
    """Run ``rnn`` over the time-major ``x`` from ``h``; returns the final ``h``.

    ``chunk``: steps per call (None: one call); ``prep(x_chunk)``: applied to each chunk's input
    first (an embedding); ``each(s, out)``: receives each chunk's time-major outputs, ``s`` the
    offset of its first step. A ``batch_first`` module gets and returns ``(B, n, ...)``; ``x``
    and the outputs given to ``each`` are time-major either way. Runs with graph when grad is
    enabled (the caller decides).
    """
    bf = rnn.batch_first
    n = x.shape[0]
    chunk = n if chunk is None else chunk
    # on CUDA, graph-free calls run in eval mode where that is exact (no active dropout
    # between layers): the result is the same, and cuDNN then keeps no training reserve for a
    # backward that never comes (it allocates one whenever the module is in training mode, even
    # under no_grad). Not on CPU: there eval mode saves nothing and measured 4 % slower (four
    # 64-step calls of an LSTM 16, batch 2, 1 thread: 904 against 871 us)
    as_eval = (x.is_cuda and rnn.training and not torch.is_grad_enabled()
               and (getattr(rnn, "dropout", 0) == 0 or getattr(rnn, "num_layers", 1) == 1))
    if as_eval:
        rnn.training = False
    try:
        return _calls(rnn, x, h, n, chunk, bf, prep, each)
    finally:
        if as_eval:
            rnn.training = True


def _calls(rnn, x, h, n, chunk, bf, prep, each):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
        for s in range(0, n, chunk):
            xc = x[s:s + chunk]
            if prep is not None:
                xc = prep(xc)
            if bf:
                out, h = rnn(xc.transpose(0, 1), h)
                out = out.transpose(0, 1)
            else:
                out, h = rnn(xc, h)
            if each is not None:
                each(s, out)
            del out
    return h


def check_chunk(chunk) -> int:
    """A planned chunk length (steps per fused call) checked: an integer >= 1."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1 (steps per fused call) or None, "
                         f"got {chunk!r}")
    return chunk
