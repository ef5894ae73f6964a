"""Exact fixed-point arithmetic for reversible RNNs: quantization and an information buffer.

Conventions (those of MacKay et al. 2018 and their public code): hidden values are fixed-point
numbers with :data:`HIDDEN_RADIX` = 23 fractional bits (``h_int = round(h * 2**23)``, held in
``int64`` here), forget gates are quantized to :data:`FORGET_RADIX` = 10 bits
(``z_int = round(z * 2**10)``), and ``z`` is bounded below by ``1 - max_forget``.

Multiplying by a gate. :func:`mul_push` returns ``m = floor(h_int * z_int / 2**10)`` — a pure
function of ``(h_int, z_int)`` — and pushes onto the buffer exactly the information that the
floor destroyed. The remainder ``r = h_int * z_int - 2**10 * m`` lies in ``[0, 2**10)`` and is
congruent to ``r0 = (-2**10 * m) mod z_int`` (known again on the way back from ``m`` and
``z_int``), so ``r = r0 + k * z_int`` with ``k`` in ``[0, n)``, ``n = ceil((2**10 - r0) /
z_int)``. The buffer stores ``k`` in mixed radix ``n``: ``buf <- buf * n + k``; the inverse,
:func:`div_pop`, pops ``k = buf mod n``, ``buf <- buf div n`` and returns
``(2**10 * m + r0 + k * z_int) / z_int`` (an exact integer division). The cost is ``log2 n``
bits, about ``10 - log2 z_int`` (at most 3 bits per unit per step at ``max_forget = 0.875``).

This differs from the authors' encoding, which first pushes the 10 low bits of ``h_int`` and
then moves ``buf mod z_int`` into ``h_int``: there ``h_t`` depends on the buffer's contents.
Here ``h_t`` depends only on ``(h_{t-1}, x_t)``, so the same cell runs unchanged under plain
autograd, under :func:`membptt.bptt` (any plan) and under the reversible backward, with the
same values; the number of bits stored per step is the same up to the rounding of ``n``.

Arbitrary precision. One :class:`InfoBuffer` holds one ``int64`` per unit (a chunk). Before a
push could overflow 63 bits for *any* unit, the whole chunk is moved to a stack of past chunks
and a zero chunk starts; pops restore it at the same push index. No Python integer ever
holds a unit's buffer; the overflow test reads one maximum from the device only when a host-side
bound (``(max + 1) * n_max**j < 2**63``) no longer proves the next push safe.
"""

from __future__ import annotations

import math

import torch

__all__ = ["HIDDEN_RADIX", "FORGET_RADIX", "InfoBuffer", "mul_push", "div_pop", "to_fixed",
           "from_fixed", "quantize_gate", "min_gate_int"]

HIDDEN_RADIX = 23
FORGET_RADIX = 10
_ONE = 1 << FORGET_RADIX            # the gate value 1.0 in radix 10
_HSCALE = float(1 << HIDDEN_RADIX)


def to_fixed(x: torch.Tensor) -> torch.Tensor:
    """``round(x * 2**23)`` as ``int64`` (exact for values on the grid, i.e. from :func:`from_fixed`)."""
    return torch.round(x * _HSCALE).to(torch.int64)


def from_fixed(i: torch.Tensor) -> torch.Tensor:
    """``i * 2**-23`` as ``float64``: exact while ``|i| < 2**53``."""
    return i.to(torch.float64) / _HSCALE


def min_gate_int(max_forget: float) -> int:
    """Smallest quantized gate ``z_int`` allowed by ``max_forget`` (at least 1: never forget all)."""
    if not isinstance(max_forget, (int, float)) or isinstance(max_forget, bool) \
            or not 0.0 < max_forget <= 1.0:
        raise ValueError(f"max_forget must be a number in (0, 1], got {max_forget!r}")
    return max(1, round((1.0 - max_forget) * _ONE))


def quantize_gate(z: torch.Tensor, z_min: int) -> torch.Tensor:
    """``clamp(round(z * 2**10), z_min, 2**10)`` as ``int64``."""
    return torch.round(z.detach() * _ONE).clamp_(z_min, _ONE).to(torch.int64)


def _radix(m: torch.Tensor, z: torch.Tensor):
    """``(r0, n)`` of the module docstring for the product ``m`` and gate ``z`` (int64)."""
    r0 = torch.remainder(-m * _ONE, z)
    n = torch.div(_ONE - r0 + z - 1, z, rounding_mode="floor")
    return r0, n


def mul_push(h: torch.Tensor, z: torch.Tensor, buf: InfoBuffer | None) -> torch.Tensor:
    """``floor(h * z / 2**10)`` (int64); pushes the lost information onto ``buf`` if given."""
    p = h * z
    m = torch.div(p, _ONE, rounding_mode="floor")
    if buf is not None:
        r0, n = _radix(m, z)
        k = torch.div(p - m * _ONE - r0, z, rounding_mode="floor")
        buf.push(k, n, z)
    return m


def div_pop(m: torch.Tensor, z: torch.Tensor, buf: InfoBuffer) -> torch.Tensor:
    """Inverse of :func:`mul_push`: the ``h`` with ``floor(h * z / 2**10) == m``, popped from ``buf``."""
    r0, n = _radix(m, z)
    k = buf.pop(n)
    return torch.div(m * _ONE + r0 + k * z, z, rounding_mode="floor")


class InfoBuffer:
    """A per-unit stack of small integers in mixed radix, in ``int64`` chunks.

    ``push(k, n, z)`` stores ``k`` (``0 <= k < n <= n_max``) per unit; ``pop(n)`` returns the
    last ``k`` pushed (the caller passes the same ``n``). Pops must mirror pushes exactly (LIFO).

    Attributes: ``cur`` (the current chunk), ``stack`` (full past chunks), ``marks`` (push index
    at which each past chunk was set aside), ``pushes`` (net pushes), ``optimal_bits`` (with
    ``track_optimal``: a 0-dim float64 tensor, the sum of ``-log2(z / 2**10)`` over every push
    and unit, the paper's ideal count, accumulated on the device without synchronisation).
    """

    def __init__(self, shape, n_max: int, device=None, track_optimal: bool = True):
        if not isinstance(n_max, int) or n_max < 1:
            raise ValueError(f"n_max must be an integer >= 1, got {n_max!r}")
        self.cur = torch.zeros(shape, dtype=torch.int64, device=device)
        self.stack: list[torch.Tensor] = []
        self.marks: list[int] = []
        self.pushes = 0
        self.n_max = n_max
        self._bits = math.ceil(math.log2(n_max)) if n_max > 1 else 0
        self._safe = 63 // self._bits if self._bits else 0
        self.track_optimal = track_optimal
        self.optimal_bits = torch.zeros((), dtype=torch.float64, device=device)

    def push(self, k: torch.Tensor, n: torch.Tensor, z: torch.Tensor | None = None) -> None:
        if self._bits:
            if self._safe == 0:
                m = int(self.cur.max())
                self._safe = (63 - (m + 1).bit_length()) // self._bits
                if self._safe == 0:
                    self.stack.append(self.cur)
                    self.marks.append(self.pushes)
                    self.cur = torch.zeros_like(self.cur)
                    self._safe = 63 // self._bits
            self._safe -= 1
        self.cur = self.cur * n + k
        self.pushes += 1
        if z is not None and self.track_optimal:
            self.optimal_bits += (FORGET_RADIX - torch.log2(z.to(torch.float64))).sum()

    def pop(self, n: torch.Tensor) -> torch.Tensor:
        if self.pushes == 0:
            raise RuntimeError("InfoBuffer.pop: nothing was pushed (pops must mirror pushes)")
        self.pushes -= 1
        k = torch.remainder(self.cur, n)
        self.cur = torch.div(self.cur, n, rounding_mode="floor")
        if self.marks and self.marks[-1] == self.pushes:
            self.marks.pop()
            self.cur = self.stack.pop()
        self._safe = 0           # pushing again after pops re-reads the maximum first
        return k

    @property
    def chunks(self) -> int:
        """Number of ``int64`` chunks held (current + past)."""
        return 1 + len(self.stack)

    @property
    def nbytes(self) -> int:
        """Bytes the buffer's tensors hold (current chunk + stack)."""
        return self.cur.nbytes + sum(t.nbytes for t in self.stack)

    def stored_bits(self) -> float:
        """Information held: ``sum log2(chunk + 1)`` over units and chunks (the coded bits)."""
        return float(sum(torch.log2(t.to(torch.float64) + 1.0).sum() for t in
                         (self.cur, *self.stack)))

    def is_empty(self) -> bool:
        """True when nothing is pushed and the current chunk is zero (after a full reverse)."""
        return self.pushes == 0 and not self.stack and not bool(self.cur.any())
