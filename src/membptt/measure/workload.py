"""The benchmark workload: one LSTM step function, its data and its parameters.

Every benchmark method trains *the same* model on *the same* batch, so that times, peaks and
gradients are comparable. The paper's setup (PAPER.md section 6) is an LSTM with 256 inputs and
256 hidden units, batch 64. The model is the project's own
:class:`membptt.models.LSTMLanguageModel` (token ids through an ``nn.Embedding`` of
``input_size``, ``nn.LSTMCell``, linear head, per-step cross-entropy summed over the batch; no
dropout) on :func:`membptt.models.synthetic_task` data (a delayed-copy task over ``classes``
tokens), the same step the executor runs.

``full-fused`` runs the same parameter tensors through one ``nn.LSTM`` call over the whole
sequence (see :meth:`Workload.fused_loss`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import LSTMLanguageModel, synthetic_task

__all__ = ["WorkloadConfig", "Workload", "make_workload"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class WorkloadConfig:
    seq_len: int = 100
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
    state0: tuple
    inputs: tuple  # (x [T, B, I], targets [T, B]); time on dim 0

    fused: nn.LSTM | None = None

    def step(self, state, x_t):
        return self.model(state, x_t)

    @property
    def step_fn(self):
        """The step object handed to ``membptt.probe`` / ``membptt.bptt`` (the model)."""
        return self.model

    def fused_loss(self):
        """Total loss of the whole sequence: one fused ``nn.LSTM`` call, with its graph."""
        if self.fused is None:
            cell = self.model.cell
            lstm = nn.LSTM(cell.input_size, cell.hidden_size).to(cell.weight_hh.device,
                                                                 cell.weight_hh.dtype)
            for src, dst in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                                lstm._flat_weights_names):
                setattr(lstm, dst, getattr(cell, src))  # share the cell's parameter tensors
            self.fused = lstm
        x, y = self.inputs
        h0, c0 = self.state0
        emb = self.model.embedding(x)
        out, _ = self.fused(emb, (h0.unsqueeze(0), c0.unsqueeze(0)))
        logits = self.model.head(out)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               reduction="sum")

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


def make_workload(config: WorkloadConfig) -> Workload:
    """Deterministic model and batch for ``config`` (same seed, same everything)."""
    dtype, device = config.torch_dtype, torch.device(config.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LSTMLanguageModel(config.input_size, config.hidden, config.classes, embed=True)
    model = model.to(device, dtype)
    x, y = synthetic_task(config.seq_len, config.batch, vocab=config.classes, seed=config.seed,
                          device=device)
    state0 = model.initial_state(config.batch)
    return Workload(config, model, tuple(state0), (x, y))
