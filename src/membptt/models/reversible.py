"""Reversible RNNs (MacKay, Vicol, Ba, Grosse, NeurIPS 2018): RevGRU, RevLSTM, their LM step.

Representation. The hidden state is split in two halves updated in turn (``h1`` from
``(x_t, h2)``, then ``h2`` from ``(x_t, new h1)``); every half is a fixed-point number with 23
fractional bits (:mod:`membptt.models.fixedpoint`). The state handed around (to the user, to
:func:`membptt.bptt`) is a ``float64`` tensor holding that value exactly (``h_int * 2**-23``;
exact for ``|h| < 2**30``); each step rounds it to the grid first, so a state is always on the
grid after one step. Gates and the head compute in the parameters' dtype.

One half-update, e.g. RevGRU's ``h1 <- z1 * h1 + (1 - z1) * g1``: the gate is quantized,
``z_int = clamp(round(z * 2**10), round((1 - max_forget) * 2**10), 2**10)`` with
``z = max_forget * sigmoid(.) + 1 - max_forget``; ``h1_int <- floor(h1_int * z_int / 2**10) +
round((1 - z_q) * g1 * 2**23)`` with ``z_q = z_int / 2**10``. The floor's lost information goes
to a per-unit :class:`~membptt.models.fixedpoint.InfoBuffer` when one is given, and the update is
subtracted exactly on the way back. RevLSTM's half ``k``: ``c_k <- z_k * c_k + i_k * g_k`` and
``h_k <- p_k * h_k + o_k * tanh(c_k)`` with two quantized forget gates ``z_k``, ``p_k`` (the
authors' cell). The state is ``h`` (RevGRU) or ``(h, c)`` (RevLSTM).

Gradients (straight-through, as the authors do). Every rounding is the identity for gradients:
the backward of a half-update is that of the float expression ``h * z_q + u`` and ``z_q`` passes
its gradient to ``z``. Values are the exact fixed-point ones (``exact + (a - a.detach())``
adds an exact zero). All three paths below run this same step, so they agree bit for bit in
value and to rounding in gradient.

Three ways to backpropagate the same model:

* :func:`reversible_bptt` — a custom autograd function whose forward keeps only ``h_T`` and the
  buffers; its backward reconstructs ``h_{t-1}`` from ``h_t`` (bit-exact; checked at every
  step against a recomputation and at the end against ``h_0``), rebuilds step ``t``'s graph
  and backpropagates it.
* :func:`full_cache_bptt` — plain autograd BPTT (every step's graph kept): the baseline.
* :func:`membptt.bptt` with any plan (MSM, ...): the model is an ordinary ``step``.

Dropout is *locked* (one mask per sequence for the input and the output, as the authors' LM
uses): :meth:`ReversibleLanguageModel.sample_dropout_masks` draws them; every step and every
path uses the same masks, so the step consumes no random numbers (``deterministic`` is True).

Caveats. Reconstruction needs the gate computation to be deterministic: the same device,
dtype, batch shape and kernels in the backward as in the forward (a mismatch is detected and
raises). The overflow test of the buffer reads one maximum from the device now and then (a
synchronisation on CUDA). A state holds 64 bits per unit (float64), not 32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fixedpoint import (
    FORGET_RADIX,
    InfoBuffer,
    div_pop,
    from_fixed,
    min_gate_int,
    mul_push,
    quantize_gate,
    to_fixed,
)

__all__ = ["RevGRUCell", "RevLSTMCell", "ReversibleLanguageModel", "RevGRULanguageModel",
           "RevLSTMLanguageModel", "ReversibleStats", "make_reversible_lm", "reversible_bptt",
           "full_cache_bptt", "buffer_bits_per_unit_step", "buffer_bytes"]

_GATE_ONE = float(1 << FORGET_RADIX)
_STATE_LIMIT = 2.0 ** 29          # |h| bound keeping h_int * z_int inside int64 and float64 exact


def _check_int(name, v, lo=1):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


class _RevCell(nn.Module):
    """Shared parts: the half-update and its inverse, gate quantization, buffers."""

    n_quantities = 1              # fixed-point quantities per half (GRU: h; LSTM: h and c)

    def __init__(self, input_size: int, hidden_size: int, max_forget: float):
        super().__init__()
        _check_int("input_size", input_size)
        _check_int("hidden_size", hidden_size, 2)
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (two halves), got {hidden_size}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.half = hidden_size // 2
        self.z_min = min_gate_int(max_forget)
        self.max_forget = float(max_forget)
        self.n_max = -(-(1 << FORGET_RADIX) // self.z_min)       # ceil(2**10 / z_min)

    def _gate(self, a):
        """``max_forget * sigmoid(a) + 1 - max_forget`` -> ``(z_int, z_q)``; ``z_q`` exact value."""
        z = self.max_forget * torch.sigmoid(a) + (1.0 - self.max_forget)
        zi = quantize_gate(z, self.z_min)
        zq = zi.to(z.dtype) / _GATE_ONE
        if z.requires_grad:
            zq = zq + (z - z.detach())        # straight-through: value zq, gradient of z
        return zi, zq

    @staticmethod
    def _update(own, zi, zq, u, buf):
        """``own * zq + u`` in exact fixed point (float64 state); pushes onto ``buf`` if given."""
        new = from_fixed(mul_push(to_fixed(own), zi, buf) + to_fixed(u.detach()))
        if torch.is_grad_enabled() and (own.requires_grad or u.requires_grad):
            approx = own.to(u.dtype) * zq + u
            new = new + (approx - approx.detach())
        return new

    @staticmethod
    def _invert(new, zi, u, buf):
        return from_fixed(div_pop(to_fixed(new) - to_fixed(u), zi, buf))

    def new_buffers(self, batch: int, device=None, track_optimal: bool = True) -> list[InfoBuffer]:
        """One buffer per half and per fixed-point quantity, in push order."""
        return [InfoBuffer((batch, self.half), self.n_max, device, track_optimal)
                for _ in range(2 * self.n_quantities)]

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, max_forget={self.max_forget}, "
                f"z_min={self.z_min}/{1 << FORGET_RADIX}")


class RevGRUCell(_RevCell):
    """RevGRU cell: ``step(x, h, buffers=None) -> h'``; ``reverse(x, h', buffers) -> h``.

    Per half ``k``: ``[z, r] = sigmoid(W_zr [x, h_o])``, ``g = tanh(W_g [x, r * h_o])``,
    ``h_k <- z * h_k + (1 - z) * g`` (fixed point; ``h_o`` the other half, already updated
    when ``k = 2``). ``h`` is ``float64`` ``(B, hidden)``; ``buffers`` from :meth:`new_buffers`.
    """

    def __init__(self, input_size: int, hidden_size: int, max_forget: float = 0.875):
        super().__init__(input_size, hidden_size, max_forget)
        g = self.half
        self.zr = nn.ModuleList(nn.Linear(input_size + g, 2 * g) for _ in range(2))
        self.g = nn.ModuleList(nn.Linear(input_size + g, g) for _ in range(2))

    def _half(self, k, x, other):
        o = other.to(x.dtype)
        z_a, r = self.zr[k](torch.cat([x, o], 1)).chunk(2, 1)
        zi, zq = self._gate(z_a)
        g = torch.tanh(self.g[k](torch.cat([x, torch.sigmoid(r) * o], 1)))
        return zi, zq, (1.0 - zq) * g

    def step(self, x, h, buffers=None):
        h1, h2 = h[:, :self.half], h[:, self.half:]
        b = buffers or (None, None)
        zi, zq, u = self._half(0, x, h2)
        h1 = self._update(h1, zi, zq, u, b[0])
        zi, zq, u = self._half(1, x, h1)
        h2 = self._update(h2, zi, zq, u, b[1])
        return torch.cat([h1, h2], 1)

    @torch.no_grad()
    def reverse(self, x, h, buffers):
        h1, h2 = h[:, :self.half], h[:, self.half:]
        zi, _, u = self._half(1, x, h1)
        h2 = self._invert(h2, zi, u, buffers[1])
        zi, _, u = self._half(0, x, h2)
        h1 = self._invert(h1, zi, u, buffers[0])
        return torch.cat([h1, h2], 1)

    @staticmethod
    def output(h):
        return h


class RevLSTMCell(_RevCell):
    """RevLSTM cell: state ``(h, c)`` (``float64``, each ``(B, hidden)``).

    Per half ``k``: ``[z, g, i, o, p] = W_k [x, h_o]``; ``c_k <- z' * c_k + sigmoid(i) *
    tanh(g)``, ``h_k <- p' * h_k + sigmoid(o) * tanh(c_k)`` with ``z'``, ``p'`` the bounded,
    quantized forget gates (fixed point; ``h_o`` the other half of ``h``).
    """

    n_quantities = 2

    def __init__(self, input_size: int, hidden_size: int, max_forget: float = 0.875):
        super().__init__(input_size, hidden_size, max_forget)
        g = self.half
        self.lin = nn.ModuleList(nn.Linear(input_size + g, 5 * g) for _ in range(2))

    def _gates(self, k, x, other):
        za, ga, ia, oa, pa = self.lin[k](torch.cat([x, other.to(x.dtype)], 1)).chunk(5, 1)
        zi, zq = self._gate(za)
        pi, pq = self._gate(pa)
        return zi, zq, torch.sigmoid(ia) * torch.tanh(ga), torch.sigmoid(oa), pi, pq

    def step(self, x, state, buffers=None):
        (h, c), s = state, self.half
        b = buffers or (None,) * 4
        hs, cs = [h[:, :s], h[:, s:]], [c[:, :s], c[:, s:]]
        for k in range(2):
            zi, zq, uc, o, pi, pq = self._gates(k, x, hs[1 - k])
            cs[k] = self._update(cs[k], zi, zq, uc, b[2 * k])
            uh = o * torch.tanh(cs[k].to(o.dtype))
            hs[k] = self._update(hs[k], pi, pq, uh, b[2 * k + 1])
        return torch.cat(hs, 1), torch.cat(cs, 1)

    @torch.no_grad()
    def reverse(self, x, state, buffers):
        (h, c), s = state, self.half
        hs, cs = [h[:, :s], h[:, s:]], [c[:, :s], c[:, s:]]
        for k in (1, 0):
            zi, _, uc, o, pi, _ = self._gates(k, x, hs[1 - k])
            hs[k] = self._invert(hs[k], pi, o * torch.tanh(cs[k].to(o.dtype)), buffers[2 * k + 1])
            cs[k] = self._invert(cs[k], zi, uc, buffers[2 * k])
        return torch.cat(hs, 1), torch.cat(cs, 1)

    @staticmethod
    def output(state):
        return state[0]


_REV_CELLS = {"gru": RevGRUCell, "lstm": RevLSTMCell}


class ReversibleLanguageModel(nn.Module):
    """One step of a reversible language model, usable as the ``step`` of ``membptt.bptt``.

    ``model(state, (x_t, y_t)) -> (new_state, loss_t)``: input (token ids ``(B,)`` through an
    ``nn.Embedding`` when ``embed=True``, else dense ``(B, input_size)``), locked input dropout,
    the reversible cell, locked output dropout, a linear head and ``cross_entropy(...,
    reduction="sum")``. The state is ``float64`` (exact fixed point): ``h`` for ``cell="gru"``,
    ``(h, c)`` for ``cell="lstm"``. No fused ``advance`` (the executor runs steps one by one).

    Backpropagation: :meth:`reversible_bptt` (buffers, no stored states),
    :meth:`full_cache_bptt` (plain autograd), or ``membptt.bptt(model, ...)`` with any plan.
    With dropout in training mode call :meth:`sample_dropout_masks` before each sequence.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, vocab_size: int, *,
                 embed: bool = False, dropout: float = 0.0, max_forget: float = 0.875):
        super().__init__()
        if cell not in _REV_CELLS:
            raise ValueError(f"cell must be one of {sorted(_REV_CELLS)}, got {cell!r}")
        _check_int("vocab_size", vocab_size)
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.kind = cell
        self.input_size, self.hidden_size, self.vocab_size = input_size, hidden_size, vocab_size
        self.dropout = float(dropout)
        self.cell = _REV_CELLS[cell](input_size, hidden_size, max_forget)
        self.embedding = nn.Embedding(vocab_size, input_size) if embed else None
        self.head = nn.Linear(hidden_size, vocab_size)
        self._masks = None

    # -- protocol for membptt.bptt ---------------------------------------------------------
    @property
    def deterministic(self) -> bool:
        """Always True: dropout masks are drawn per sequence, not per step."""
        return True

    @property
    def state_units(self) -> int:
        """Fixed-point values per batch element in a state (``hidden``, or ``2 * hidden``)."""
        return self.hidden_size * self.cell.n_quantities

    def initial_state(self, batch: int, *, device=None, dtype=None):
        """Zero state(s), ``float64`` (``dtype`` may only be None or float64: the state holds
        the fixed-point value exactly)."""
        _check_int("batch", batch)
        if dtype not in (None, torch.float64):
            raise ValueError(f"a reversible model's state is float64 (exact fixed point), got "
                             f"dtype={dtype}")
        z = torch.zeros(batch, self.hidden_size, dtype=torch.float64,
                        device=device or self.head.weight.device)
        return (z, z.clone()) if self.kind == "lstm" else z

    def sample_dropout_masks(self, batch: int, generator: torch.Generator | None = None):
        """Draw the locked dropout masks (input and output) for the next sequence(s)."""
        _check_int("batch", batch)
        w = self.head.weight
        keep = 1.0 - self.dropout

        def mask(n):
            m = torch.rand(batch, n, generator=generator, device=w.device) < keep
            return m.to(w.dtype) / keep

        self._masks = (mask(self.input_size), mask(self.hidden_size))
        return self._masks

    def clear_dropout_masks(self):
        self._masks = None

    def _active_masks(self, batch):
        if not (self.training and self.dropout > 0.0):
            return None
        if self._masks is None or self._masks[0].shape[0] != batch:
            raise RuntimeError(
                f"dropout={self.dropout} in training mode needs locked masks for batch {batch}:"
                f" call model.sample_dropout_masks({batch}) before the sequence "
                f"(have {None if self._masks is None else self._masks[0].shape[0]})")
        return self._masks

    def _input(self, x):
        if self.embedding is not None:
            x = self.embedding(x)
        m = self._active_masks(x.shape[0])
        return x if m is None else x * m[0]

    def _loss(self, state, y):
        h = self.cell.output(state).to(self.head.weight.dtype)
        m = self._active_masks(h.shape[0])
        if m is not None:
            h = h * m[1]
        return F.cross_entropy(self.head(h), y, reduction="sum")

    def forward(self, state, x_t):
        x, y = x_t
        state = self.cell.step(self._input(x), state)
        return state, self._loss(state, y)

    # -- the two baselines of membptt.bptt -------------------------------------------------
    def reversible_bptt(self, state0, inputs, **kw):
        """:func:`reversible_bptt` of this model."""
        return reversible_bptt(self, state0, inputs, **kw)

    def full_cache_bptt(self, state0, inputs):
        """:func:`full_cache_bptt` of this model."""
        return full_cache_bptt(self, state0, inputs)

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, embed={self.embedding is not None}"


class RevGRULanguageModel(ReversibleLanguageModel):
    """RevGRU language-model step; state ``h`` (float64)."""

    def __init__(self, input_size: int, hidden_size: int, vocab_size: int, **kw):
        super().__init__("gru", input_size, hidden_size, vocab_size, **kw)


class RevLSTMLanguageModel(ReversibleLanguageModel):
    """RevLSTM language-model step; state ``(h, c)`` (float64)."""

    def __init__(self, input_size: int, hidden_size: int, vocab_size: int, **kw):
        super().__init__("lstm", input_size, hidden_size, vocab_size, **kw)


def make_reversible_lm(cell: str, input_size: int, hidden_size: int, vocab_size: int, **kw):
    """Factory: ``cell`` in ``{"gru", "lstm", "rev-gru", "rev-lstm"}``; ``kw`` as the model's
    (``embed``, ``dropout``, ``max_forget``)."""
    name = cell[4:] if isinstance(cell, str) and cell.startswith("rev-") else cell
    if name not in _REV_CELLS:
        raise ValueError(f"cell must be one of 'gru', 'lstm', 'rev-gru', 'rev-lstm', got {cell!r}")
    return ReversibleLanguageModel(name, input_size, hidden_size, vocab_size, **kw)


# -- measurement ---------------------------------------------------------------------------

@dataclass
class ReversibleStats:
    """Filled by :func:`reversible_bptt`'s forward: what the buffers hold after ``steps`` steps.

    ``allocated_bits`` is 64 bits per ``int64`` the buffers hold (the authors' measure of
    memory); ``stored_bits`` the information they hold (``sum log2(buf + 1)``);
    ``optimal_bits`` the paper's ideal ``sum -log2 z_q``. ``units`` = batch x state values.
    """

    steps: int = 0
    units: int = 0
    buffer_bytes: int = 0
    chunks: int = 0
    allocated_bits: float = 0.0
    stored_bits: float = 0.0
    optimal_bits: float = 0.0

    def per_unit_step(self, which: str = "allocated") -> float:
        """Bits per state unit per step (compare with 32 bits of a float32 hidden state)."""
        bits = {"allocated": self.allocated_bits, "stored": self.stored_bits,
                "optimal": self.optimal_bits}
        if which not in bits:
            raise ValueError(f"which must be one of {sorted(bits)}, got {which!r}")
        return bits[which] / max(1, self.units * self.steps)


def buffer_bytes(buffers) -> int:
    """Bytes held by a list of :class:`InfoBuffer` (current chunks and stacks)."""
    return sum(b.nbytes for b in buffers)


def buffer_bits_per_unit_step(buffers, steps: int, units: int, which: str = "allocated"):
    """Bits per state unit per step held by ``buffers`` after ``steps`` steps (see
    :class:`ReversibleStats`; ``units`` = batch x state values per element)."""
    _check_int("steps", steps)
    _check_int("units", units)
    return _stats(buffers, steps, units).per_unit_step(which)


def _stats(buffers, steps, units):
    return ReversibleStats(
        steps=steps, units=units, buffer_bytes=buffer_bytes(buffers),
        chunks=sum(b.chunks for b in buffers),
        allocated_bits=8.0 * buffer_bytes(buffers),
        stored_bits=sum(b.stored_bits() for b in buffers),
        optimal_bits=float(sum(b.optimal_bits for b in buffers)))


# -- the reversible backward ---------------------------------------------------------------

def _as_tuple(state):
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


class _ReversibleBPTT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, model, stats, n_state, dummy, *tensors):
        state0, (xs, ys) = tensors[:n_state], tensors[n_state:]
        single = n_state == 1
        buffers = model.cell.new_buffers(xs.shape[1], xs.device, stats is not None)
        h = state0[0] if single else state0
        total = None
        with torch.no_grad():
            for t in range(xs.shape[0]):
                h = model.cell.step(model._input(xs[t]), h, buffers)
                loss = model._loss(h, ys[t])
                total = loss if total is None else total + loss
        h = _as_tuple(h)
        if stats is not None:
            s = _stats(buffers, xs.shape[0], xs.shape[1] * model.state_units)
            stats.__dict__.update(s.__dict__)
        ctx.model, ctx.buffers, ctx.h_T, ctx.n_state = model, buffers, h, n_state
        ctx.save_for_backward(*state0, xs, ys)
        return (total, *(t.clone() for t in h))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_loss, *g_state):
        model, buffers, n = ctx.model, ctx.buffers, ctx.n_state
        saved = ctx.saved_tensors
        state0, xs, ys = saved[:n], saved[n], saved[n + 1]
        single = n == 1
        h = ctx.h_T
        if g_loss is None:
            g_loss = torch.zeros((), dtype=model.head.weight.dtype, device=xs.device)
        grad_h = tuple(torch.zeros_like(t) if g is None else g for t, g in zip(h, g_state))
        x_grad = xs.requires_grad and xs.is_floating_point()
        gx = torch.zeros_like(xs) if x_grad else None
        for t in range(xs.shape[0] - 1, -1, -1):
            prev = _as_tuple(model.cell.reverse(model._input(xs[t]), h[0] if single else h,
                                                buffers))
            with torch.enable_grad():
                leaves = tuple(p.detach().requires_grad_() for p in prev)
                x = xs[t].detach().requires_grad_() if x_grad else xs[t]
                new, loss = model(leaves[0] if single else leaves, (x, ys[t]))
                new = _as_tuple(new)
                if not all(torch.equal(a.detach(), b) for a, b in zip(new, h)):
                    raise RuntimeError(
                        f"reversible_bptt: the inverse of step {t + 1} is not exact (the "
                        "recomputed step does not reproduce h_{t + 1}): nondeterministic gates")
                torch.autograd.backward((loss, *new), (g_loss, *grad_h))
            grad_h = tuple(leaf.grad for leaf in leaves)
            if x_grad:
                gx[t] = x.grad
            h = prev
        if not all(b.is_empty() for b in buffers) or not all(
                torch.equal(a, from_fixed(to_fixed(b.detach()))) for a, b in zip(h, state0)):
            raise RuntimeError("reversible_bptt: the reverse pass did not end at h_0 with empty "
                               "buffers (reconstruction failed: parameters changed between "
                               "forward and backward, or the forward's gates differ from the "
                               "backward's; the gradients accumulated are wrong)")
        ctx.buffers = ctx.h_T = ctx.model = None
        g0 = tuple(g if s.requires_grad else None for g, s in zip(grad_h, state0))
        return (None, None, None, None, *g0, gx, None)


def _check_call(model, state0, inputs):
    if not isinstance(model, ReversibleLanguageModel):
        raise TypeError(f"model must be a ReversibleLanguageModel, got {type(model).__name__}")
    st = _as_tuple(state0)
    n = model.cell.n_quantities
    if len(st) != n or not all(isinstance(s, torch.Tensor) for s in st):
        raise ValueError(f"state0 must be {'a tensor' if n == 1 else f'a tuple of {n} tensors'}"
                         f" for cell {model.kind!r}")
    for s in st:
        s = s.detach()
        if s.dtype != torch.float64 or s.dim() != 2 or s.shape[1] != model.hidden_size:
            raise ValueError(f"state0 tensors must be float64 (B, {model.hidden_size}), got "
                             f"{s.dtype} {tuple(s.shape)}")
        if not bool(torch.isfinite(s).all()) or float(s.abs().max()) >= _STATE_LIMIT:
            raise ValueError(f"state0 values must be finite with |h| < 2**29, got max "
                             f"{float(s.abs().max())}")
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
        raise ValueError("inputs must be a pair (xs, ys) with time on dim 0")
    xs, ys = inputs
    if xs.shape[0] < 1 or xs.shape[0] != ys.shape[0]:
        raise ValueError(f"xs and ys need the same length >= 1 on dim 0, got {xs.shape[0]} and "
                         f"{ys.shape[0]}")
    if xs.shape[1] != st[0].shape[0]:
        raise ValueError(f"batch of inputs ({xs.shape[1]}) differs from state0's "
                         f"({st[0].shape[0]})")
    return st, xs, ys


def reversible_bptt(model, state0, inputs, *, return_state: bool = False,
                    stats: ReversibleStats | None = None):
    """Sum of the step losses; its ``backward()`` reconstructs states instead of storing them.

    Args:
        model: a :class:`ReversibleLanguageModel`.
        state0: ``float64`` ``h_0`` (RevGRU) or ``(h_0, c_0)`` (RevLSTM), ``(B, hidden)``.
        inputs: ``(xs, ys)``: ``xs`` ``(T, B)`` token ids or ``(T, B, input_size)`` features,
            ``ys`` ``(T, B)`` targets.
        return_state: also return ``h_T`` (gradients flow into it).
        stats: a :class:`ReversibleStats` filled with the buffers' size after the forward.

    The forward keeps ``h_T``, the buffers (and references to the inputs); no per-step graph.
    The backward runs step ``t``'s inverse, recomputes its graph from the reconstructed
    ``h_{t-1}``, checks that it reproduces ``h_t`` bit for bit, and backpropagates it;
    parameter gradients accumulate into ``.grad`` (as with ``membptt.bptt``:
    ``torch.autograd.grad(loss, params)`` does not see them). Once differentiable.
    """
    st, xs, ys = _check_call(model, state0, inputs)
    if not torch.is_grad_enabled():
        h, total = state0, None
        for t in range(xs.shape[0]):
            h, loss = model(h, (xs[t], ys[t]))
            total = loss if total is None else total + loss
        return (total, h) if return_state else total
    dummy = torch.empty(0, requires_grad=True)
    out = _ReversibleBPTT.apply(model, stats, len(st), dummy, *st, xs, ys)
    if return_state:
        return out[0], (out[1] if len(st) == 1 else tuple(out[1:]))
    return out[0]


def full_cache_bptt(model, state0, inputs):
    """Plain autograd BPTT of the same fixed-point forward (every step's graph kept)."""
    from ..execution.executor import plain_bptt

    _, xs, ys = _check_call(model, state0, inputs)
    return plain_bptt(model, state0, (xs, ys))[0]
