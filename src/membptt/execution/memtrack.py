"""A small live-tensor-bytes tracker (internal; the full measurement module is membptt.measure).

:class:`LiveBytes` is a ``TorchDispatchMode``: every storage that an operator *creates* while the
mode is active (an output whose storage is not one of the operator's inputs' storages, so views
and in-place results are not counted twice) is recorded with a weak reference, and its bytes are
subtracted when the storage is freed. ``live`` is the current total, ``peak`` the maximum seen
since the last :meth:`reset_peak`. Storages that existed before the mode was entered (parameters,
inputs) are never counted. Works on every device; slow (a Python call per operator), so it is
for tests and probing only.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["LiveBytes", "storage_key", "state_bytes"]


def storage_key(t: torch.Tensor) -> int:
    """An id of ``t``'s storage, unique while the storage is alive."""
    return t.untyped_storage()._cdata


def state_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st._cdata] = st.nbytes()
    return sum(seen.values())


class LiveBytes(TorchDispatchMode):
    """Count bytes of live storages created inside the mode (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, tuple] = {}

    def reset_peak(self) -> None:
        self.peak = self.live

    def keys(self) -> set:
        """Storage keys of the tracked, still-live storages."""
        return set(self._refs)

    def _freed(self, key: int) -> None:
        entry = self._refs.pop(key, None)
        if entry is not None:
            self.live -= entry[1]

    def _add(self, st) -> None:
        key = st._cdata
        if key in self._refs:
            return
        n = st.nbytes()
        if n == 0:
            return
        ref = weakref.ref(st, lambda _r, key=key, self=self: self._freed(key))
        self._refs[key] = (ref, n)
        self.live += n
        if self.live > self.peak:
            self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat_in, _ = tree_flatten((args, kwargs))
        ins = {a.untyped_storage()._cdata for a in flat_in if isinstance(a, torch.Tensor)}
        flat_out, _ = tree_flatten(out)
        for t in flat_out:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if st._cdata not in ins:
                    self._add(st)
        return out
