"""The model registry of the benchmarks: a workload's model is one entry, built from config keys.

An entry (:class:`ModelEntry`) says how to build the step module from the workload's config
keys (``hidden``, ``input_size``, ``classes``, ``batch``, ``seed``; the device and dtype are
applied by the caller), how to make the data and the initial state, and, optionally, how to
run a *fused segment with graph*: ``segment(model, state, xs) -> (state, summed loss)`` over
``len(xs)`` steps in one call (``full-fused`` and ``torch.utils.checkpoint`` over fused
segments use it; a model without one cannot run those methods and says so).

Adding a model is one entry::

    register_model(ModelEntry("my-rnn", build=lambda c: MyStep(c.input_size, c.hidden,
                                                               c.classes)))

The state may be any structure of tensors (a tensor, a tuple ``(h, c)``, nested tuples, lists,
dicts): every benchmark method steps through it with ``torch.utils._pytree`` and never unpacks
it. A model with its own backward (e.g. a reversible RNN) is one entry here plus the methods
that use it (``membptt.measure.methods``), which may look for extra callables in
:attr:`ModelEntry.extras`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .reversible import ReversibleStats, make_reversible_lm, reversible_bptt
from .rnn import GRULanguageModel, LSTMLanguageModel, RNNLanguageModel
from .spiking import SpikingNetwork, rate_coded_task
from .synthetic import synthetic_task

__all__ = ["ModelEntry", "MODELS", "register_model", "get_model", "rnn_fused_segment",
           "state_leaves"]


def _default_data(cfg, device):
    return synthetic_task(cfg.seq_len, cfg.batch, vocab=cfg.classes, seed=cfg.seed,
                          device=device)


def _default_state(model, batch):
    return model.initial_state(batch)


@dataclass(frozen=True)
class ModelEntry:
    """One benchmark model.

    Attributes:
        name: the registry key (the ``model`` config key).
        build: ``build(cfg) -> nn.Module``: the step ``model(state, x_t) -> (state, loss_t)``
            from the config keys; built on CPU in float32 under the config's seed (the caller
            moves it to the device and dtype).
        data: ``data(cfg, device) -> inputs`` with time on dim 0 (default: the delayed-copy
            task of :func:`membptt.models.synthetic_task` over ``classes`` tokens).
        initial_state: ``initial_state(model, batch) -> state`` (default
            ``model.initial_state(batch)``).
        segment: ``segment(model, state, xs) -> (state, summed loss)``: ``len(xs)`` steps in one
            fused call *with* graph, on the step's own parameter tensors; ``None`` if the model
            has none (the fused baselines then refuse it).
        extras: anything else methods may need (e.g. a reversible model's own backward).
    """

    name: str
    build: Callable
    data: Callable = _default_data
    initial_state: Callable = _default_state
    segment: Callable | None = None
    description: str = ""
    extras: dict = field(default_factory=dict)


def rnn_fused_segment(model: RNNLanguageModel, state, xs):
    """``len(xs)`` steps of an :class:`RNNLanguageModel` in one ``nn.LSTM``/``nn.GRU`` call with
    graph, then the head and the summed cross-entropy over all of them: the model's own
    ``segment`` (the executor's with-graph fused call, :mod:`.fusedcall`). Exact only without
    active dropout (refused otherwise). Keeps the whole segment's activations (that is the
    point of fusing)."""
    own = getattr(model, "segment", None)
    if not callable(own):
        raise ValueError(f"model {type(model).__name__} has no segment(state, xs): a fused "
                         "segment needs one (an RNNLanguageModel, or a step with its own)")
    return own(state, xs)


def _rnn_entry(name: str, cls: type[nn.Module], description: str) -> ModelEntry:
    return ModelEntry(
        name,
        build=lambda c: cls(c.input_size, c.hidden, c.classes, embed=True),
        segment=rnn_fused_segment,
        description=description)


def _reversible_entry(name: str, description: str) -> ModelEntry:
    """A reversible LM (:mod:`membptt.models.reversible`): its state is ``float64`` whatever the
    parameters' dtype (``initial_state`` makes it so: the fixed-point value must be exact), it
    has no fused segment, and ``extras`` holds its own backward (``reversible_bptt(model,
    state0, inputs, stats=...)``) and the stats class that backward fills (``stats``)."""
    return ModelEntry(
        name,
        build=lambda c: make_reversible_lm(name, c.input_size, c.hidden, c.classes, embed=True),
        description=description,
        extras={"reversible_bptt": reversible_bptt, "stats": ReversibleStats})


def _spiking_data(cfg, device):
    return rate_coded_task(cfg.seq_len, cfg.batch, cfg.input_size, cfg.classes, seed=cfg.seed,
                           device=device, dtype=cfg.torch_dtype)


def _spiking_entry(name: str, neuron: str, description: str) -> ModelEntry:
    """A spiking network (:mod:`membptt.models.spiking`): two layers of ``hidden`` LIF or
    adaptive-LIF neurons on ``input_size`` rate-coded input channels, a leaky-integrator
    readout over ``classes`` and a per-step cross-entropy; its data are Poisson spike trains
    (:func:`~membptt.models.spiking.rate_coded_task`), its state a dict of membranes. No
    fused segment (a spike is discontinuous: nothing is reordered)."""
    return ModelEntry(
        name,
        build=lambda c: SpikingNetwork(c.input_size, c.hidden, c.classes, neuron=neuron),
        data=_spiking_data,
        description=description)


MODELS: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry, *, replace: bool = False) -> ModelEntry:
    """Add ``entry`` to :data:`MODELS` (``replace=True`` to overwrite an existing name)."""
    if not isinstance(entry, ModelEntry):
        raise TypeError(f"expected a ModelEntry, got {type(entry).__name__}")
    if not entry.name or not isinstance(entry.name, str):
        raise ValueError(f"a model needs a non-empty name, got {entry.name!r}")
    if entry.name in MODELS and not replace:
        raise ValueError(f"model {entry.name!r} is already registered (pass replace=True)")
    MODELS[entry.name] = entry
    return entry


def get_model(name: str) -> ModelEntry:
    """The registry entry ``name``; a clear error listing the valid names otherwise."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}") from None


# -- the registry: one entry per model ---------------------------------------------------------
register_model(_rnn_entry("lstm", LSTMLanguageModel,
                          "token embedding, nn.LSTMCell, linear head, summed cross-entropy"))
register_model(_rnn_entry("gru", GRULanguageModel,
                          "token embedding, nn.GRUCell, linear head, summed cross-entropy"))
register_model(_reversible_entry("rev-gru", "token embedding, RevGRU (MacKay et al. 2018; "
                                 "float64 fixed-point state, even hidden), linear head"))
register_model(_reversible_entry("rev-lstm", "token embedding, RevLSTM (MacKay et al. 2018; "
                                 "float64 fixed-point (h, c), even hidden), linear head"))
register_model(_spiking_entry("snn-lif", "lif", "rate-coded spikes, 2 LIF layers (surrogate "
                              "gradient, reset by subtraction), leaky readout, per-step CE"))
register_model(_spiking_entry("snn-alif", "alif", "rate-coded spikes, 2 adaptive-LIF layers "
                              "(LSNN, Bellec et al. 2018), leaky readout, per-step CE"))


def state_leaves(state) -> list[torch.Tensor]:
    """The tensors of a state structure, in pytree order."""
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(state) if isinstance(t, torch.Tensor)]
