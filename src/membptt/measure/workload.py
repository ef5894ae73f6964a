"""The benchmark workload: one model's step function, its data and its parameters.

Every benchmark method trains *the same* model on *the same* batch, so that times, peaks and
gradients are comparable. The model is an entry of :data:`membptt.models.registry.MODELS`
(``lstm``, ``gru``; a new model is one entry), chosen by the ``model`` config key and built
from the other keys. The paper's experimental setup is an LSTM with 256 inputs and 256
hidden units, batch 64. The shipped models are token embeddings of ``input_size``, the cell,
a linear head and per-step cross-entropy summed over the batch (no dropout), on
:func:`membptt.models.synthetic_task` data (a delayed-copy task over ``classes`` tokens): the
same step the executor runs.

The state ``state0`` is whatever the model's initial state is (a tensor for ``gru``, a tuple
``(h, c)`` for ``lstm``, any pytree of tensors for a registered model); methods step through it
without unpacking it. ``full-fused`` and the fused checkpoint baselines run segments of the
sequence through the entry's ``segment`` (one fused call with graph on the same parameter
tensors; see :meth:`Workload.segment`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..models.registry import ModelEntry, get_model, state_leaves

__all__ = ["WorkloadConfig", "Workload", "make_workload", "check_workload"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class WorkloadConfig:
    seq_len: int = 100
    model: str = "lstm"
    hidden: int = 256
    batch: int = 64
    input_size: int = 256
    classes: int = 256
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def torch_dtype(self) -> torch.dtype:
        try:
            return _DTYPES[self.dtype]
        except KeyError:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}") from None


@dataclass
class Workload:
    config: WorkloadConfig
    model: nn.Module
    state0: object  # the model's state structure (tensor, tuple, pytree of tensors)
    inputs: object  # time on dim 0; for the shipped models (x [T, B], targets [T, B])
    entry: ModelEntry | None = None

    def step(self, state, x_t):
        return self.model(state, x_t)

    @property
    def step_fn(self):
        """The step object handed to ``membptt.probe`` / ``membptt.bptt`` (the model)."""
        return self.model

    @property
    def state_leaves(self) -> list[torch.Tensor]:
        """The tensors of ``state0`` (pytree order)."""
        return state_leaves(self.state0)

    @property
    def has_segment(self) -> bool:
        return self.entry is not None and self.entry.segment is not None

    def segment(self, state, xs):
        """``len(xs)`` steps from ``state`` in one fused call with graph: ``(state, loss)``."""
        if not self.has_segment:
            name = self.entry.name if self.entry is not None else type(self.model).__name__
            raise ValueError(f"model {name!r} has no fused segment (its registry entry's "
                             "`segment` is None): fused methods cannot run it")
        return self.entry.segment(self.model, state, xs)

    def fused_loss(self):
        """Total loss of the whole sequence: one fused call over it, with its graph."""
        return self.segment(self.state0, self.inputs)[1]

    def parameters(self):
        return list(self.model.parameters())

    def named_parameters(self):
        return list(self.model.named_parameters())

    def zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def grads(self) -> dict[str, torch.Tensor]:
        return {n: (p.grad.detach().clone() if p.grad is not None else None)
                for n, p in self.model.named_parameters()}

    def param_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device)


def _machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_workload(config: WorkloadConfig) -> None:
    """Refuse, before any data or parameter is allocated, a config the model would refuse.

    The dtype must be known, and the model must accept the sizes: its registry entry's
    ``build`` runs on the ``meta`` device (no memory), so a constructor's own check (a
    reversible model's even ``hidden``) is raised here as a ``ValueError`` naming the model.
    A model that cannot be built on ``meta`` for another reason is left to the real build.
    For the registry's default data (the delayed-copy task) a batch whose tokens alone exceed
    the machine's memory is refused too (``--seq-len 1000000000``)."""
    config.torch_dtype  # noqa: B018 - raises for an unknown dtype
    entry = get_model(config.model)
    from ..models import registry

    if entry.data is registry._default_data:  # two (seq_len, batch) int64 tensors
        need = 2 * 8 * config.seq_len * config.batch
        have = _machine_memory()
        if have is not None and need > have:
            raise ValueError(f"--seq-len {config.seq_len} with --batch {config.batch}: the "
                             f"batch's tokens alone need {need / 2**30:,.1f} GiB, above this "
                             f"machine's {have / 2**30:,.1f} GiB of memory")
    try:
        with torch.device("meta"):
            entry.build(config)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--model {config.model} with hidden={config.hidden}, "
                         f"input_size={config.input_size}, classes={config.classes}: "
                         f"{e}") from None
    except Exception:  # noqa: BLE001 - not buildable on meta: the real build decides
        pass


def make_workload(config: WorkloadConfig) -> Workload:
    """Deterministic model and batch for ``config`` (same seed, same everything)."""
    entry = get_model(config.model)
    dtype, device = config.torch_dtype, torch.device(config.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = entry.build(config)
    model = model.to(device, dtype)
    inputs = entry.data(config, device)
    state0 = entry.initial_state(model, config.batch)
    return Workload(config, model, state0, inputs, entry)
