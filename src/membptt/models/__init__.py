"""Step functions shipped with membptt: LSTM and GRU language-model steps and a synthetic task.

Every model here is an ``nn.Module`` usable directly as the ``step`` of :func:`membptt.bptt`:
``model(state, (x_t, y_t)) -> (new_state, loss_t)`` with a per-step summed cross-entropy loss.
Each also offers ``initial_state(batch)``, ``deterministic`` (no dropout active) and the fused
multi-step graph-free ``advance(state, (xs, ys), need_loss)`` that the executor uses for runs.
"""

from .reversible import (
           ReversibleLanguageModel,
           RevGRULanguageModel,
           RevLSTMLanguageModel,
           full_cache_bptt,
           make_reversible_lm,
           reversible_bptt,
)
from .rnn import GRULanguageModel, LSTMLanguageModel, RNNLanguageModel
from .synthetic import synthetic_task

__all__ = ["LSTMLanguageModel", "GRULanguageModel", "RNNLanguageModel", "synthetic_task",
           "ReversibleLanguageModel", "RevGRULanguageModel", "RevLSTMLanguageModel",
           "make_reversible_lm", "reversible_bptt", "full_cache_bptt"]
