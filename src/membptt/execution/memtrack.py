"""Live tensor bytes: a tensor-level peak-memory tracker that works on every device.

The one tracker of the project: the executor's probe and tests use it here, and
:mod:`membptt.measure` re-exports it.

:class:`LiveBytesTracker` is a :class:`~torch.utils._python_dispatch.TorchDispatchMode`. Every
ATen operator that runs while it is active -- the forward, the tensors autograd saves for the
backward, and the backward's own temporaries (the autograd engine carries the dispatch mode
into the backward) -- passes through :meth:`__torch_dispatch__`. For each tensor an operator
returns, the tracker looks at its *storage*: a storage that is not the storage of one of the
operator's inputs (a view, an in-place result, ``detach``...) is a new allocation. The tracker
records its size and puts a weak reference on the Python storage object (keyed by the C++
storage's address, ``_cdata``); PyTorch keeps that
object alive exactly as long as the C++ storage, so the weak reference's callback fires when
the memory is freed and the bytes are subtracted.

What is counted: the bytes of every storage allocated while the mode is active and still alive,
so the reported peak is *above the pre-iteration baseline* (parameters, inputs and anything
else that existed before ``__enter__`` are not counted, even when an operator returns a view
of them). Parameter gradients created during the iteration are counted (they are allocations of
the iteration; ``membptt bench`` reports their size separately as ``grad_bytes``).

Caveats (stated, not hidden):

* Bytes are ``storage.nbytes()``: the logical size, not the allocator's rounded block (on CUDA
  the caching allocator rounds to 512 bytes; use ``torch.cuda.max_memory_allocated`` for that,
  see :func:`membptt.measure.cuda_peak`).
* Memory an operator allocates and frees *inside* one kernel (scratch buffers of a fused
  kernel, oneDNN workspaces that never become tensors) is invisible: the tracker sees tensors,
  not ``malloc``. The RSS high-water mark (:mod:`membptt.measure.rss`) is the complement.
* A tracked storage that an in-place operator (``resize_``) grows is re-measured;
  ``UntypedStorage.resize_`` does not go through the dispatcher, so the tracker patches it
  while active.
* Single-threaded use: the tracker is not thread-safe beyond what the GIL gives.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["LiveBytesTracker", "track_peak", "storage_key", "state_bytes"]


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



def _storages(tree, out=None):
    """Storages of the tensors in nested tuples/lists/dicts (a fast, minimal tree walk)."""
    if out is None:
        out = []
    if isinstance(tree, torch.Tensor):
        try:
            out.append(tree.untyped_storage())
        except (RuntimeError, NotImplementedError):  # sparse / opaque tensors
            pass
    elif isinstance(tree, (tuple, list)):
        for x in tree:
            _storages(x, out)
    elif isinstance(tree, dict):
        for x in tree.values():
            _storages(x, out)
    return out


class LiveBytesTracker(TorchDispatchMode):
    """Count the bytes of live tensor storages allocated while active; keep the peak.

    >>> with LiveBytesTracker() as tr:
    ...     x = torch.empty(1000, dtype=torch.float32)
    ...     del x
    >>> tr.peak_bytes, tr.current_bytes
    (4000, 0)

    Attributes: ``current_bytes`` (live now), ``peak_bytes`` (max of ``current_bytes``),
    ``allocated_bytes`` (total ever allocated), ``n_allocations``. :meth:`reset_peak` sets the
    peak to the current value (for a peak over a sub-interval). With ``record=True`` the
    ``timeline`` list receives ``(op name, current_bytes)`` after every operator.
    """

    def __init__(self, record: bool = False):
        super().__init__()
        self.current_bytes = 0
        self.peak_bytes = 0
        self.allocated_bytes = 0
        self.n_allocations = 0
        self.record = record
        self.timeline: list[tuple[str, int]] = []
        self._live: dict[int, tuple[weakref.ref, int]] = {}
        self._orig_resize = None

    # -- bookkeeping ----------------------------------------------------------------------
    def _freed(self, key: int, _ref) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.current_bytes -= entry[1]

    def _add(self, st) -> None:
        key = st._cdata
        if key in self._live:
            return
        nbytes = int(st.nbytes())
        ref = weakref.ref(st, lambda r, k=key: self._freed(k, r))
        self._live[key] = (ref, nbytes)
        self.current_bytes += nbytes
        self.allocated_bytes += nbytes
        self.n_allocations += 1
        if self.current_bytes > self.peak_bytes:
            self.peak_bytes = self.current_bytes

    def _resized(self, st) -> None:
        key = st._cdata
        entry = self._live.get(key)
        if entry is None:
            return
        new = int(st.nbytes())
        if new == entry[1]:
            return
        self.current_bytes += new - entry[1]
        self.allocated_bytes += max(0, new - entry[1])
        self._live[key] = (entry[0], new)
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def reset_peak(self) -> None:
        self.peak_bytes = self.current_bytes

    @property
    def live_storages(self) -> int:
        return len(self._live)

    # -- the mode -------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {st._cdata for st in _storages((args, kwargs))}
        for st in _storages(out):
            if st._cdata not in inputs:
                self._add(st)
            elif st._cdata in self._live:  # in-place on a tracked storage (e.g. resize_)
                self._resized(st)
        if self.record:
            self.timeline.append((str(func), self.current_bytes))
        return out

    def __enter__(self):
        self._orig_resize = torch.UntypedStorage.resize_
        orig = self._orig_resize
        tracker = self

        def resize_(st, size):
            result = orig(st, size)
            tracker._resized(st)
            return result

        torch.UntypedStorage.resize_ = resize_
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            if self._orig_resize is not None:
                torch.UntypedStorage.resize_ = self._orig_resize
                self._orig_resize = None


def track_peak(fn, *args, **kwargs) -> tuple[object, LiveBytesTracker]:
    """Run ``fn(*args, **kwargs)`` under a fresh tracker; return ``(result, tracker)``."""
    with LiveBytesTracker() as tr:
        result = fn(*args, **kwargs)
    return result, tr
