"""A tiny deterministic synthetic sequence task (no downloads)."""

from __future__ import annotations

import torch

__all__ = ["synthetic_task"]


def synthetic_task(seq_len: int, batch: int, vocab: int = 16, *, delay: int = 2,
                   dense: bool = False, seed: int = 0, device=None,
                   dtype: torch.dtype = torch.float32):
    """Delayed-copy task: the target at step t is the input token of step ``t - delay``.

    Tokens are drawn uniformly from ``0..vocab-1`` with a private ``torch.Generator`` seeded by
    ``seed`` (the global RNG is untouched). Targets before step ``delay + 1`` are token 0.

    Returns ``(x, y)`` with time on dim 0: ``x`` is ``(seq_len, batch)`` int64 tokens, or with
    ``dense=True`` their one-hot encoding ``(seq_len, batch, vocab)`` in ``dtype``; ``y`` is
    ``(seq_len, batch)`` int64. Pass ``(x, y)`` as the ``inputs`` of :func:`membptt.bptt`.
    """
    for name, v in (("seq_len", seq_len), ("batch", batch), ("vocab", vocab)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not isinstance(delay, int) or delay < 0:
        raise ValueError(f"delay must be an integer >= 0, got {delay!r}")
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.randint(0, vocab, (seq_len, batch), generator=gen)
    y = torch.zeros_like(x)
    if delay < seq_len:
        y[delay:] = x[: seq_len - delay]
    if dense:
        x = torch.nn.functional.one_hot(x, vocab).to(dtype)
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y
