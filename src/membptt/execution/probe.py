"""Measure one step's state sizes and operation times: :func:`probe` and :func:`measure_step`.

Everything is measured through the executor's own primitives (the same code :func:`bptt` runs),
so the cost model prices exactly what is executed:

* ``hidden_bytes``: the distinct storages of the state a step returns.
* ``internal_bytes``: bytes a stored internal state keeps alive: the step's autograd graph
  (saved tensors), its outputs and loss, and the input state ``h_{i-1}`` when the record holds
  it (the executor's leaf copy of ``h_{i-1}`` shares its storage, so it always does).
  ``beta_bytes``: the same minus the input state's storages (what an internal state costs when
  ``h_{i-1}`` is stored anyway). Measured with :class:`~membptt.execution.memtrack.LiveBytesTracker`.
* ``forward_graph`` / ``backward``: seconds per step of a forward with graph (kept, as an
  internal state) and of its backward (gradient accumulation into the parameters included),
  medians over ``repeats`` chains of ``chain`` steps, linked and backpropagated by one call as
  the executor does for consecutive stored internal states.
* ``run_fixed`` / ``run_per_step``: a graph-free run of ``k`` steps (fused via
  ``step.advance`` when the executor would fuse) timed for ``k = 1`` and ``k = chain``; the
  line through the two medians.

The probe leaves the parameters' ``.grad`` as it found them (they are found by walking the
step's graph) and the global RNG state untouched.
"""

from __future__ import annotations

import math
import statistics
import time
import weakref
from dataclasses import dataclass

import torch

from ..planning.costs import CostModel
from .executor import GRAPH, RUN, S_CURSOR, _executor
from .memtrack import LiveBytesTracker, state_bytes

__all__ = ["probe", "measure_step", "StepReport"]


@dataclass(frozen=True)
class StepReport:
    """What :func:`measure_step` found; ``costs`` is the planner's :class:`CostModel`."""

    costs: CostModel
    hidden_bytes: int
    internal_bytes: int
    beta_bytes: int
    working_bytes: int  # one step's working set beyond stored states (see measure_step)
    alpha: float  # internal_bytes / hidden_bytes
    beta: float  # beta_bytes / hidden_bytes
    fused: bool
    chain: int
    repeats: int

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "costs"}
        d["costs"] = self.costs.to_dict()
        return d


def _params_of(tensors) -> list:
    """Leaf tensors requiring grad reachable from ``tensors``' graphs (the step's parameters)."""
    seen, out, stack = set(), [], [t.grad_fn for t in tensors if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None:
            out.append(var)
        stack.extend(f for f, _ in fn.next_functions)
    return out


def _sync(ex):
    for d in ex.cuda_devices:
        torch.cuda.synchronize(d)


def _fresh(ex):
    ex.hidden.clear()
    ex.internal.clear()
    ex.core = None
    ex.dh = None
    ex.cursor = None


def measure_step(step, state0, inputs, *, repeats: int = 5, chain: int = 16,
                 fused: bool = True, sizes: bool = True, times: bool = True) -> StepReport:
    """Measure sizes and times of one step (see the module docstring).

    ``inputs`` has time on dim 0 like for :func:`membptt.bptt`; only its first
    ``min(len, chain)`` steps are used. ``working_bytes`` is the peak of live bytes beyond the
    starting point during one forward with graph and its backward, plus two hidden states (the
    cursor state and the incoming gradient ``dh_i``, which a plan does not count) and two
    scalars (the loss sum and its gradient), or the peak
    transient of a fused run over all of ``inputs`` (with and without losses) when larger.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    if not isinstance(chain, int) or chain < 1:
        raise ValueError(f"chain must be an integer >= 1, got {chain!r}")
    ex = _executor(step, state0, inputs, None, None, None, fused, True, None)
    K = min(chain, ex.T)
    if K < 2:
        raise ValueError(f"measure_step needs inputs with at least 2 time steps, got {ex.T}")
    ex.preserve = False  # nothing is replayed here; we restore the global RNG ourselves
    rng = (torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in ex.cuda_devices])
    # find the parameters; stash their .grad so the probe has no side effect on them
    ex.cursor = ex.state0
    with torch.no_grad():
        ex._run((RUN, S_CURSOR, 0, 1, 1, False), False)
    h1 = ex.cursor
    rec = ex._graph_step(h1, 2)
    params = _params_of([rec[3]] + [t for t in rec[2] if isinstance(t, torch.Tensor)])
    one = torch.ones_like(rec[3])
    del rec
    if ex.any_x_grad:
        ex.gx = [torch.zeros_like(t) if g else None for t, g in zip(ex.inputs, ex.x_grad)]
    stash = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        ex.gloss = one
        # warm-up (also allocates .grad, so later accumulation is in place)
        _chain(ex, K, h1)
        if fused and ex.fused:
            _timed_run(ex, h1, K)
        hidden = state_bytes(h1)
        if sizes:
            internal, beta, working = _sizes(ex, h1, K)
        else:
            internal = beta = working = None
        if times:
            fg, bw, f1, fk = [], [], [], []
            for _ in range(repeats):
                a, b = _chain(ex, K, h1)
                fg.append(a / K)
                bw.append(b / K)
                f1.append(_timed_run(ex, h1, 1))
                fk.append(_timed_run(ex, h1, K))
            t_graph, t_back = statistics.median(fg), statistics.median(bw)
            r1, rk = statistics.median(f1), statistics.median(fk)
            per = max((rk - r1) / (K - 1), 1e-9)
            fixed = max(r1 - per, 0.0)
        else:
            per, fixed, t_graph, t_back = 1.0, 0.0, 1.0, 2.0
    finally:
        _fresh(ex)
        for p, g in zip(params, stash):
            p.grad = g
        torch.set_rng_state(rng[0])
        for d, s in zip(ex.cuda_devices, rng[1]):
            torch.cuda.set_rng_state(s, d)
    costs = CostModel(run_fixed=fixed, run_per_step=per, forward_graph=t_graph, backward=t_back,
                      hidden_bytes=hidden if sizes else None,
                      internal_bytes=internal, beta_bytes=beta)
    return StepReport(costs=costs, hidden_bytes=hidden, internal_bytes=internal or 0,
                      beta_bytes=beta or 0, working_bytes=working or 0,
                      alpha=(internal or 0) / hidden, beta=(beta or 0) / hidden,
                      fused=ex.fused, chain=K, repeats=repeats)


def probe(step, state0, inputs, **kw) -> CostModel:
    """The planner's :class:`CostModel` for ``step``, measured (seconds and bytes).

    ``membptt.plan(strategy, T, memory="5%", costs=membptt.probe(step, state0, inputs))``
    plans on real sizes and times. Keywords as :func:`measure_step`.
    """
    return measure_step(step, state0, inputs, **kw).costs


def _cyclic_steps(T, n):
    """``n`` step indices 2, 3, .., T, 2, 3, .. (only the inputs they select matter);
    all 1 when T == 1."""
    return [2 + k % (T - 1) if T > 1 else 1 for k in range(n)]


def _linked_forwards(ex, h, steps, recs, prev=None):
    """Forwards with graph of ``steps`` from ``h``, each linked to the previous one (as the
    executor links consecutive stored internal states); appends the records to ``recs``."""
    single = ex.single
    for i in steps:
        hin, xleaf, out, loss = ex._graph_step(h, i, prev)
        prev = (out,) if single else tuple(out)
        h = tuple(t.detach() for t in prev)
        recs.append((hin, xleaf, prev, loss, h, None))
    return prev


def _chain(ex, K, h1):
    """Forwards with graph of steps 2..K+1 (stored, linked into one chain), then their backward.

    This is what the executor runs for a chain of consecutive internal states whose backwards
    are adjacent (one ``torch.autograd.backward`` call; see ``executor._link``). Uses steps
    ``2..K`` of the inputs cyclically when K == T. Returns (forward s, backward s).
    """
    idx = _cyclic_steps(ex.T, K)
    _fresh(ex)
    ex.dh = tuple(torch.zeros_like(t) for t in h1)
    _sync(ex)
    t0 = time.perf_counter()
    recs = []
    _linked_forwards(ex, h1, idx, recs)
    _sync(ex)
    t1 = time.perf_counter()
    recs.reverse()
    ex._back_chain(recs, 2)
    _sync(ex)
    t2 = time.perf_counter()
    _fresh(ex)
    return t1 - t0, t2 - t1


CHAIN_LENGTHS = (1, 2, 3, 4)


def chain_working_bytes(ex, h, mt, lengths=CHAIN_LENGTHS) -> int:
    """Working set of backpropagating chains of linked steps, measured (bytes).

    For each length ``L``: from a held state ``h`` and a held incoming gradient ``dh``, the
    forwards with graph of ``L`` linked steps, then their backward in one call, as the executor
    runs them. What counts is the peak of live bytes (tracker ``mt``) from just before the
    *last* step's forward on, beyond what was live then: the other ``L - 1`` records are
    stored states a plan counts; the last step is the working core a plan does not count.
    Returns the largest over ``lengths``. ``L = 1`` is a lone core step; longer chains also
    hold, until the chain is done, the parameter gradients summed over it (autograd's
    accumulation buffer) and the gradients flowing between steps; measured here it stops
    growing from ``L = 3`` on.
    """
    T = ex.T
    worst = 0
    for L in lengths:
        steps = _cyclic_steps(T, L)
        ex.dh = tuple(torch.zeros_like(t) for t in h)
        recs = []
        prev = _linked_forwards(ex, h, steps[:-1], recs)
        hh = recs[-1][4] if recs else h
        base = mt.current_bytes
        mt.reset_peak()
        _linked_forwards(ex, hh, steps[-1:], recs, prev)
        del prev, hh
        recs.reverse()
        ex._back_chain(recs, 2)
        ex.dh = None
        worst = max(worst, mt.peak_bytes - base)
    return worst


def _timed_run(ex, h1, k):
    """Seconds of one graph-free run of k steps (steps 2..k+1, cyclically), as executed."""
    T = ex.T
    _fresh(ex)
    ex.cursor = h1
    a = 2
    b = min(a + k - 1, T)
    spans = [(a, b)]
    left = k - (b - a + 1)
    while left > 0:  # only when k > T - 1: continue from step 2 again
        n = min(left, T - 1)
        spans.append((2, 1 + n))
        left -= n
    _sync(ex)
    t0 = time.perf_counter()
    for a, b in spans:
        ex._run((RUN, S_CURSOR, 0, a, b, False), False)
    _sync(ex)
    t = time.perf_counter() - t0
    _fresh(ex)
    return t


def _sizes(ex, h1, K):
    with LiveBytesTracker() as mt:
        # a fresh input state, created inside the tracker
        ex.cursor = tuple(t.clone() for t in h1)
        ex._run((RUN, S_CURSOR, 0, 2, 2, False), False)
        h = ex.cursor
        refs = [weakref.ref(t.untyped_storage()) for t in h]
        nbytes = [t.untyped_storage().nbytes() for t in h]
        base = mt.current_bytes  # h only
        ex._graph((GRAPH, S_CURSOR, 0, 3 if ex.T >= 3 else 2, False, False), False)
        ex.cursor = None
        del h
        # live = (base - bytes(h)) + new storages + the input storages the record holds
        internal = mt.current_bytes - base + sum(nbytes)
        beta = internal - sum(n for r, n in zip(refs, nbytes) if r() is not None)
        _fresh(ex)
        # working set: chains of linked steps (a lone core step included) backpropagated from
        # a held state and a held dh
        h = tuple(t.clone() for t in h1)
        working = chain_working_bytes(ex, h, mt)
        if ex.fused:  # the longest fused run there can be, with and without losses
            for first in (False, True):
                ex.cursor = h
                base = mt.current_bytes
                mt.reset_peak()
                ex._run((RUN, S_CURSOR, 0, 2, ex.T, False), first)
                ex.cursor = None
                ex.loss_sum = None
                working = max(working, mt.peak_bytes - base)
        _fresh(ex)
        del h
    hidden = state_bytes(h1)
    scalars = 2 * ex.gloss.untyped_storage().nbytes()  # the loss sum and its gradient
    return internal, max(beta, 1), working + 2 * hidden + scalars


def alpha_beta_units(report: StepReport) -> tuple[int, int]:
    """(alpha, beta) in hidden-state units, rounded up as the planners do."""
    return (max(1, math.ceil(report.alpha)), max(1, math.ceil(report.beta)))
