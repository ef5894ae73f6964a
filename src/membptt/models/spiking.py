"""A spiking network step: LIF or adaptive-LIF layers, a surrogate gradient, a per-step readout.

Spiking networks are trained with BPTT over many time steps (hundreds to thousands: one per
millisecond of simulated time), and plain autograd keeps every step's graph, so memory grows
with ``T`` exactly as for the paper's RNNs (Gruslys et al. 2016, arXiv:1606.03401). The step here is
the recurrence ``state_{t} = f(state_{t-1}, x_t)`` of the paper's Sec. 3 with a per-step loss, so every
strategy of the planner (BPTT-HSM, -ISM, -MSM, Chen's, ...) applies unchanged.

One step of :class:`SpikingNetwork` (``step(state, (x_t, y_t)) -> (state, loss_t)``), for each
of ``layers`` fully-connected spiking layers ``l`` (input ``s^0_t = x_t``, the input spikes)::

    I_t   = W_l s^{l-1}_t + c_l                      input current
    v_t   = beta * v_{t-1} + I_t                     leaky integration (membrane)
    A_t   = b0 + beta_adapt * a_{t}                  threshold (LIF: A_t = b0)
    s^l_t = H(v_t - A_t)                             spike; backward: surrogate H'
    v_t   = v_t - s^l_t * A_t                        reset by subtraction
    a_{t+1} = rho * a_t + (1 - rho) * s^l_t          threshold adaptation (adaptive LIF)

then a readout of the last layer's spikes: ``"leaky"`` (a leaky integrator,
``u_t = kappa * u_{t-1} + W_o s^L_t + c_o``, in the state) or ``"linear"`` (``u_t = W_o s^L_t +
c_o``), and ``loss_t = cross_entropy(u_t, y_t, reduction="sum")`` against the label ``y_t``
(the sequence's class at every step: a per-step classification loss, which is the form the
step protocol takes; a loss at the last step only is targets of ``-100`` elsewhere).

The adaptive LIF is the LSNN neuron of Bellec et al. 2018 ("Long short-term memory and
learning-to-learn in networks of spiking neurons"): ``a_t = rho a_{t-1} + (1 - rho) z_{t-1}``,
threshold ``b0 + beta_adapt a_t``; the state holds ``a_{t+1}``, computed at the end of step
``t`` from its spikes, which is the same recurrence. ``H`` is the Heaviside step in the
forward pass and a smooth surrogate in the backward pass (:class:`SurrogateSpike`, a custom
``torch.autograd.Function``: ``"fast_sigmoid"``, ``1 / (1 + slope |x|)^2`` as in SuperSpike,
Zenke & Ganguli 2018, or ``"atan"``, snntorch's default). With ``detach_reset=True`` the reset
term carries no gradient (snntorch's and SpikingJelly's option).

The state is a dict ``{"mem1": v^1, "mem2": v^2, ..., "adapt1": a^1, ..., "out": u}``
(adaptation only for the adaptive neuron, ``out`` only for the leaky readout); it is what the
executor stores and recomputes from, so every recurrent quantity is in it. The step draws no
random numbers (``deterministic``): the input spikes are data, made by
:func:`rate_coded_task` (Poisson / Bernoulli rate coding of a class template). Its graph-free
``advance(state, xs, need_loss)`` runs ``len(xs)`` steps in one call with the step's own ops
(bit-identical to stepping: spikes are discontinuous, so nothing is reordered).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SurrogateSpike", "spike", "SpikingLayer", "SpikingNetwork", "rate_coded_task",
           "SURROGATES", "NEURONS", "READOUTS"]

SURROGATES = ("fast_sigmoid", "atan")
NEURONS = ("lif", "alif")
READOUTS = ("leaky", "linear")


class SurrogateSpike(torch.autograd.Function):
    """Heaviside spike ``H(x) = 1[x > 0]`` forward; surrogate derivative backward.

    ``kind="fast_sigmoid"``: ``dH/dx ~ 1 / (1 + slope |x|)^2`` (SuperSpike);
    ``kind="atan"``: ``dH/dx ~ (slope / 2) / (1 + (pi/2 slope x)^2)`` (snntorch's ATan).
    The spikes have the dtype of ``x``. Saves only ``x`` for backward, so a recomputed step
    (membptt's recomputation from a stored state) rebuilds exactly the same backward.
    """

    @staticmethod
    def forward(ctx, x, slope: float, kind: str):
        ctx.save_for_backward(x)
        ctx.slope, ctx.kind = slope, kind
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        k = ctx.slope
        if ctx.kind == "fast_sigmoid":
            d = 1.0 / (1.0 + k * x.abs()) ** 2
        else:
            d = (k / 2.0) / (1.0 + (math.pi / 2.0 * k * x) ** 2)
        return grad * d, None, None


def spike(x: torch.Tensor, slope: float = 25.0, kind: str = "fast_sigmoid") -> torch.Tensor:
    """:class:`SurrogateSpike` applied to ``x`` (the membrane minus the threshold)."""
    return SurrogateSpike.apply(x, slope, kind)


def _check_fraction(name: str, v, *, closed: bool = True) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or not (0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0):
        rng = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"{name} must be a number in {rng}, got {v!r}")
    return float(v)


class SpikingLayer(nn.Module):
    """One fully-connected layer of LIF (``adaptive=False``) or adaptive-LIF neurons.

    ``forward(s_in, v, a) -> (s, v, a)``: spikes, membrane after the reset, and the next
    adaptation variable (``a`` is ``None`` for LIF). See the module docstring for the equations.
    """

    def __init__(self, n_in: int, n_out: int, *, adaptive: bool = False, beta: float = 0.9,
                 threshold: float = 1.0, rho: float = 0.95, beta_adapt: float = 1.8,
                 surrogate: str = "fast_sigmoid", slope: float = 25.0,
                 detach_reset: bool = False):
        super().__init__()
        for name, v in (("n_in", n_in), ("n_out", n_out)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}, "
                             f"got {surrogate!r}")
        for name, v in (("threshold", threshold), ("slope", slope)):
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    or v <= 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if (isinstance(beta_adapt, bool) or not isinstance(beta_adapt, (int, float))
                or not math.isfinite(beta_adapt) or beta_adapt < 0):
            raise ValueError(f"beta_adapt must be a finite number >= 0, got {beta_adapt!r}")
        self.beta = _check_fraction("beta", beta)
        self.rho = _check_fraction("rho", rho)
        self.adaptive = bool(adaptive)
        self.threshold, self.beta_adapt = float(threshold), float(beta_adapt)
        self.surrogate, self.slope = surrogate, float(slope)
        self.detach_reset = bool(detach_reset)
        self.n_out = n_out
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, s_in, v, a=None):
        v = self.beta * v + self.fc(s_in)
        thr = self.threshold + self.beta_adapt * a if self.adaptive else self.threshold
        s = spike(v - thr, self.slope, self.surrogate)
        r = s.detach() if self.detach_reset else s
        v = v - r * thr
        if self.adaptive:
            a = self.rho * a + (1.0 - self.rho) * s
        return s, v, a

    def extra_repr(self) -> str:
        kind = "alif" if self.adaptive else "lif"
        extra = f", rho={self.rho}, beta_adapt={self.beta_adapt}" if self.adaptive else ""
        return (f"{kind}, beta={self.beta}, threshold={self.threshold}{extra}, "
                f"surrogate={self.surrogate}(slope={self.slope}), "
                f"detach_reset={self.detach_reset}")


class SpikingNetwork(nn.Module):
    """``layers`` spiking layers and a readout: the step ``(state, (x_t, y_t)) -> (state, loss_t)``.

    Args:
        input_size, hidden_size, classes: input channels, neurons per layer, readout classes.
        layers: number of spiking layers (>= 1; default 2).
        neuron: ``"lif"`` or ``"alif"`` (adaptive threshold, LSNN).
        readout: ``"leaky"`` (leaky-integrator readout ``u`` in the state, decay ``kappa``) or
            ``"linear"`` (a linear map of the last layer's spikes; no state).
        beta, threshold, rho, beta_adapt, surrogate, slope, detach_reset: the neurons'
            (:class:`SpikingLayer`).

    ``x_t`` is the input spikes ``(B, input_size)`` (any floating dtype: they are cast to the
    parameters' dtype, so float32 spikes drive a float64 model) and ``y_t`` the labels
    ``(B,)``; :func:`rate_coded_task` makes both, time-major.
    """

    deterministic = True  # no random numbers in a step: the input spikes are data

    def __init__(self, input_size: int, hidden_size: int, classes: int, *, layers: int = 2,
                 neuron: str = "lif", readout: str = "leaky", kappa: float = 0.9,
                 beta: float = 0.9, threshold: float = 1.0, rho: float = 0.95,
                 beta_adapt: float = 1.8, surrogate: str = "fast_sigmoid", slope: float = 25.0,
                 detach_reset: bool = False):
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("layers", layers)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(classes, int) or isinstance(classes, bool) or classes < 2:
            raise ValueError(f"classes must be an integer >= 2, got {classes!r}")
        if neuron not in NEURONS:
            raise ValueError(f"neuron must be one of {', '.join(NEURONS)}, got {neuron!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        self.kappa = _check_fraction("kappa", kappa)
        self.neuron, self.readout_kind = neuron, readout
        self.input_size, self.hidden_size, self.classes = input_size, hidden_size, classes
        kw = dict(adaptive=neuron == "alif", beta=beta, threshold=threshold, rho=rho,
                  beta_adapt=beta_adapt, surrogate=surrogate, slope=slope,
                  detach_reset=detach_reset)
        sizes = [input_size] + [hidden_size] * layers
        self.layers = nn.ModuleList(SpikingLayer(a, b, **kw) for a, b in zip(sizes, sizes[1:]))
        self.readout = nn.Linear(hidden_size, classes)

    def initial_state(self, batch: int, *, device=None, dtype=None) -> dict:
        """Zero membranes (and adaptation, readout): ``{"mem1", ..., "adapt1", ..., "out"}``."""
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        w = self.readout.weight
        kw = dict(device=device or w.device, dtype=dtype or w.dtype)
        state = {f"mem{i + 1}": torch.zeros(batch, self.hidden_size, **kw)
                 for i in range(len(self.layers))}
        if self.neuron == "alif":
            state.update({f"adapt{i + 1}": torch.zeros(batch, self.hidden_size, **kw)
                          for i in range(len(self.layers))})
        if self.readout_kind == "leaky":
            state["out"] = torch.zeros(batch, self.classes, **kw)
        return state

    def _step(self, state: dict, x, y, need_loss: bool = True):
        s = x.to(self.readout.weight.dtype)
        mems, adapts = {}, {}
        for i, layer in enumerate(self.layers, 1):
            a = state[f"adapt{i}"] if layer.adaptive else None
            s, mems[f"mem{i}"], a = layer(s, state[f"mem{i}"], a)
            if layer.adaptive:
                adapts[f"adapt{i}"] = a
        new = {**mems, **adapts}  # the key order of initial_state (the state's structure)
        u = self.readout(s)
        if self.readout_kind == "leaky":
            u = self.kappa * state["out"] + u
            new["out"] = u
        loss = F.cross_entropy(u, y, reduction="sum") if need_loss else None
        return new, loss

    def forward(self, state, x_t):
        x, y = x_t
        return self._step(state, x, y)

    @torch.no_grad()
    def advance(self, state, xs, need_loss: bool = False):
        """``len(xs)`` graph-free steps from ``state`` with the step's own ops (bit-identical to
        stepping); ``(state, summed loss or None)``. The executor's runs of forwards."""
        x, y = xs
        total = None
        for t in range(x.shape[0]):
            state, loss = self._step(state, x[t], y[t], need_loss)
            if need_loss:
                total = loss if total is None else total + loss
        return state, total

    def extra_repr(self) -> str:
        return f"neuron={self.neuron}, readout={self.readout_kind}, kappa={self.kappa}"


def rate_coded_task(seq_len: int, batch: int, input_size: int, classes: int, *,
                    max_rate: float = 0.2, seed: int = 0, device=None,
                    dtype: torch.dtype = torch.float32):
    """Rate-coded (Bernoulli/Poisson) spike trains of ``classes`` random rate templates.

    Each class has a template of firing probabilities per step in ``[0, max_rate]`` for each of
    the ``input_size`` channels; each sequence of the batch has a class label and, at every
    step, each channel spikes with its template's probability. Drawn with a private
    ``torch.Generator`` seeded by ``seed`` (the global RNG is untouched).

    Returns ``(x, y)``, time on dim 0: ``x`` the spikes ``(seq_len, batch, input_size)`` in
    ``dtype`` (0/1), ``y`` the labels ``(seq_len, batch)`` int64 (constant over time).
    """
    for name, v in (("seq_len", seq_len), ("batch", batch), ("input_size", input_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 2:
        raise ValueError(f"classes must be an integer >= 2, got {classes!r}")
    if (isinstance(max_rate, bool) or not isinstance(max_rate, (int, float))
            or not 0.0 < max_rate <= 1.0):
        raise ValueError(f"max_rate must be a probability in (0, 1], got {max_rate!r}")
    gen = torch.Generator().manual_seed(int(seed))
    templates = torch.rand(classes, input_size, generator=gen, dtype=torch.float64) * max_rate
    labels = torch.randint(0, classes, (batch,), generator=gen)
    rates = templates[labels]  # (batch, input_size)
    x = (torch.rand(seq_len, batch, input_size, generator=gen, dtype=torch.float64)
         < rates).to(dtype)
    y = labels.expand(seq_len, batch).contiguous()
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y
