"""Step functions shipped with membptt: LSTM and GRU language-model steps and a synthetic task.

Every model here is an ``nn.Module`` usable directly as the ``step`` of :func:`membptt.bptt`:
``model(state, (x_t, y_t)) -> (new_state, loss_t)`` with a per-step summed cross-entropy loss.
Each also offers ``initial_state(batch)``, ``deterministic`` (no dropout active) and the fused
multi-step graph-free ``advance(state, (xs, ys), need_loss)`` that the executor uses for runs,
and ``segment(state, (xs, ys))``, the fused multi-step call *with* graph it uses for segments.
:class:`FusedRNNStep` adapts a user's own ``nn.LSTM``/``nn.GRU`` + head + loss the same way.
Reversible RNNs (MacKay et al. 2018; :mod:`membptt.models.reversible`): RevGRU/RevLSTM with
fixed-point states, an information buffer and their own memory-free backward.
Spiking networks (:mod:`membptt.models.spiking`): LIF / adaptive-LIF layers with a surrogate
gradient and a per-step readout loss, on rate-coded input spikes.
"""

from .fused import FusedRNNStep
from .reversible import (
    ReversibleLanguageModel,
    RevGRULanguageModel,
    RevLSTMLanguageModel,
    full_cache_bptt,
    make_reversible_lm,
    reversible_bptt,
)
from .rnn import GRULanguageModel, LSTMLanguageModel, RNNLanguageModel
from .spiking import SpikingNetwork, rate_coded_task
from .synthetic import synthetic_task

__all__ = ["FusedRNNStep", "LSTMLanguageModel", "GRULanguageModel", "RNNLanguageModel",
           "synthetic_task", "ReversibleLanguageModel", "RevGRULanguageModel",
           "RevLSTMLanguageModel", "make_reversible_lm", "reversible_bptt", "full_cache_bptt",
           "SpikingNetwork", "rate_coded_task"]
