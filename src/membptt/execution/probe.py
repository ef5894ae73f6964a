"""Measure one step's state sizes and operation times: :func:`probe` and :func:`measure_step`.

Everything is measured through the executor's own public seam (:class:`Executor`: ``run``,
``graph``, ``backward``), the same code :func:`bptt` runs, so the cost model prices exactly
what is executed:

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
  line through the two medians (the stepped planner's model).
* ``working_bytes``: what an iteration holds beyond the stored states at its peak: the
  parameter gradients, the working core's graph and its backward's temporaries, a chain's
  summed parameter gradients, the cursor and the incoming ``dh`` (or a fused run's transient
  when larger). A byte budget bounds stored states plus this.
* ``stepped_peaks``: plain stepped BPTT's live-bytes peak (the step called ``n`` times under
  autograd from ``h_0``, the summed loss backpropagated into the parameters, their gradients
  counted) at ``n = 8`` and ``32`` (capped by ``T``): the measured base of percentage budgets.

When the step offers ``segment`` (fused steps with graph) and is deterministic, the probe also
measures fused calls **as a function of their length** ``L`` (``segment_lengths``, each one
measured, no affine assumption): the forward and backward seconds of one with-graph call of
``L`` steps, the bytes a stored ``L``-step segment holds (and without its input state), the
working set while an ``L``-step segment is the working core (after a stored one in its chain,
or alone, whichever is larger: ``working_bytes``; alone: ``core_bytes``, what an HSM chain
holds, also at every length up to :data:`CORE_DENSE` steps and at lengths at most 10 % apart
up to :data:`CORE_TOP`, :func:`core_lengths`: a chain may have any length and its bytes are
priced at the next measured length up), and graph-free fused runs at several lengths. These go into
``CostModel.segments`` (a :class:`~membptt.planning.costs.SegmentCosts`), on which the planner
plans blocks of fused steps.

Stable prices. Times are medians over at least ``repeats`` rounds and at least
``min_seconds`` (:data:`MIN_SECONDS`, 1 s) of them, taken round-robin (every length once per
round, so a slow spell of the machine hits all lengths alike); a shorter call whose median
is more than :data:`RETIME_TOLERANCE` above a longer one's is timed again with it (up to
:data:`RETIME_PASSES` times, :func:`inverted`: a slow spell on one length, once priced a
63-step paper-size call as a 125-step one); then the medians are made non-decreasing in
length (:func:`monotone`, pool adjacent violators): a longer call never costs less than a
shorter one, and a dip that is only noise would otherwise move the planner's choice from one
probe to the next. Sizes are live-byte counts, deterministic for a given step and shape.

Protocol check. Before measuring, the probe checks that ``advance`` and ``segment`` agree with
``step`` (same states and summed loss over a few steps, within float tolerance) and that a step
replays identically from the same default-generator RNG state (a step that draws from a private
``torch.Generator`` would silently get wrong gradients on recomputation). A disagreement raises
:class:`ProtocolError` naming the call and the difference.

The probe leaves the parameters' ``.grad`` as it found them (they are found by walking the
step's graph) and the global RNG state untouched, also when the step raises.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import weakref
from dataclasses import dataclass, field

import torch

from ..planning.blocks import uniform_lengths
from ..planning.costs import CostModel, SegmentCosts
from .executor import Executor, graph_params, rng_restore, rng_snapshot
from .memtrack import LiveBytesTracker, state_bytes

__all__ = ["probe", "measure_step", "StepReport", "ProtocolError", "working_set_bytes",
           "SEGMENT_LENGTHS"]

SEGMENT_LENGTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
UNIFORM_KS = (4, 8, 16, 32, 64, 128)  # ceil(T / K) is measured too (default lengths only)
UNIFORM_MIN_T = 128  # below it the powers of two are dense enough (and probes stay short)
RUN_LENGTHS = (1, 4, 16, 64, 256, 1024)
# a lone core's working set (the chain planner's only byte price) is measured on a denser
# grid than call times: every length up to CORE_DENSE, then lengths at most CORE_RATIO apart
# up to CORE_TOP (bytes between grid points are priced at the next one up, so a sparse grid
# charges a 17-step chain a 32-step core's bytes); beyond, the timed lengths
CORE_DENSE = 32
CORE_RATIO = 1.1
CORE_TOP = 128


def core_lengths(lengths) -> tuple[int, ...]:
    """The lengths a lone core's working set is measured at: ``lengths`` (the timed ones),
    every length up to :data:`CORE_DENSE` and lengths at most :data:`CORE_RATIO` apart up to
    :data:`CORE_TOP`, none above the longest timed length."""
    top = max(lengths)
    out = set(lengths) | set(range(1, min(CORE_DENSE, top) + 1))
    L = CORE_DENSE
    while True:
        L = max(L + 1, math.floor(L * CORE_RATIO))
        if L > min(CORE_TOP, top):
            break
        out.add(L)
    return tuple(sorted(out))


class ProtocolError(ValueError):
    """A step's ``advance``/``segment`` disagrees with ``step``, or the step does not replay."""


@dataclass(frozen=True)
class StepReport:
    """What :func:`measure_step` found; ``costs`` is the planner's :class:`CostModel`."""

    costs: CostModel
    hidden_bytes: int
    internal_bytes: int
    beta_bytes: int
    working_bytes: int  # the stepped working set (see the module docstring)
    alpha: float  # internal_bytes / hidden_bytes
    beta: float  # beta_bytes / hidden_bytes
    fused: bool
    chain: int
    repeats: int
    grad_bytes: int = 0  # the parameter gradients (included in working_bytes)
    segments: dict | None = field(default=None)  # fused-call measurements by length

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "costs"}
        d["costs"] = self.costs.to_dict()
        return d


def _params_of(tensors, rec=None) -> list:
    """Leaf tensors requiring grad reachable from ``tensors``' graphs (the step's parameters),
    less the leaf copies of the state and inputs record ``rec`` starts from: those are the
    executor's, new in every record, and their gradient (the ``dh`` a backward hands on, the
    inputs' gradient) is allocated inside every measured working set, so counting them with
    the parameters' gradients would charge one state twice."""
    own = {id(t) for t in (*(rec.hin or ()), *(rec.xleaf or ()))} if rec is not None else set()
    return [t for t in graph_params(tensors, limit=math.inf) if id(t) not in own]


def _steps(T, a, n):
    """``(a, b)`` spans covering ``n`` steps starting at step ``a``, wrapping to step 2 after
    ``T`` (only the inputs they select matter)."""
    spans = []
    while n > 0:
        b = min(a + n - 1, T)
        spans.append((a, b))
        n -= b - a + 1
        a = 2
    return spans


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_min_seconds(value) -> float:
    """``value`` (seconds a timing loop runs at least), or :data:`MIN_SECONDS` for None;
    refuses anything but a finite number >= 0, naming it."""
    value = MIN_SECONDS if value is None else value
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"min_seconds must be a finite number of seconds >= 0, got {value!r}")
    return value


def measure_step(step, state0, inputs, *, repeats: int = 5, chain: int = 16,
                 fused: bool = True, sizes: bool = True, times: bool = True,
                 segments: bool = True, segment_lengths=SEGMENT_LENGTHS,
                 check: bool = True, min_seconds: float | None = None) -> StepReport:
    """Measure sizes and times of one step (see the module docstring).

    ``inputs`` has time on dim 0 like for :func:`membptt.bptt`; the chains use steps
    ``2..chain+1`` and the segments steps ``2..`` (cyclically within the sequence).
    ``repeats``: the least number of timing rounds; each timing loop goes on until
    ``min_seconds`` have passed (default :data:`MIN_SECONDS`, 1 s; at most :data:`MAX_ROUNDS`
    rounds; 0 for exactly ``repeats``). ``segments=False`` skips the fused-call measurements;
    ``segment_lengths`` (by default powers of two up to 256 and, from ``T = 128`` on, the
    uniform lengths ``ceil(T / K)`` for ``K`` in :data:`UNIFORM_KS`) are capped so that two
    segments fit in the sequence (``2 L + 1 <= T``).
    """
    _check_int("repeats", repeats, 1)
    min_seconds = check_min_seconds(min_seconds)
    _check_int("chain", chain, 2)
    ex = Executor(step, state0, inputs, fused=fused, segments=segments, preserve_rng_state=False)
    K = min(chain, ex.T - 1)
    if ex.T < 3:
        raise ValueError(f"measure_step needs inputs with at least 3 time steps, got {ex.T}")
    lengths = ()
    if ex.segments:
        # the given lengths and, by default, the uniform lengths ceil(T / K) of the checkpoint
        # fronts users compare with: a call's time and working set are measured at the lengths
        # such plans use (working sets are not linear in L to the byte: interpolating between
        # 64 and 128 steps overstated a 125-step core by 4.4 % on the launch-bound LSTM, and
        # bytes are priced at the next measured length up)
        extra = (uniform_lengths(ex.T, UNIFORM_KS)
                 if segment_lengths is SEGMENT_LENGTHS and ex.T >= UNIFORM_MIN_T else set())
        # a uniform length replaces a given one at most 3 % above it (63 for 64, 125 for 128:
        # the probe's time stays about what it was)
        given = {int(L) for L in segment_lengths
                 if not any(u < int(L) <= 1.03 * u for u in extra)}
        lengths = tuple(sorted({L for L in given | extra if 2 * L + 1 <= ex.T}))
        if not lengths or lengths[0] != 1:
            lengths = tuple(sorted(set(lengths) | {1}))
    rng = rng_snapshot(ex.cuda_devices)
    params, stash = [], []
    try:
        if check:
            _protocol_check(ex, rng)
        # find the parameters; stash their .grad so the probe has no side effect on them
        h1, _ = ex.run(ex.start(), 1, 1)
        rec = ex.graph(h1, 2)
        params = _params_of([rec.loss] + [t for t in rec.out], rec)
        one = torch.ones_like(rec.loss)
        del rec
        ex.input_grads(True)
        stash = [p.grad for p in params]
        for p in params:
            p.grad = None
        ex.gloss = one
        # warm-up (also allocates .grad, so later accumulation is in place)
        _chain(ex, K, h1)
        if ex.fused:
            _timed_run(ex, h1, K)
        grad_bytes = sum(p.numel() * p.element_size() for p in params)
        hidden = state_bytes(h1)
        # beside a measured core: a cursor and an incoming gradient, the parameters'
        # gradients, and the loss and dL; the twin of an outputs-mode step (membptt.wrap /
        # scan) has neither (subtracting the one loss its measured core made as well put
        # measured peaks one scalar above predicted ones: kept)
        one_b = one.untyped_storage().nbytes()
        scalars = 0 if getattr(step, "outputs_twin", False) else 2 * one_b
        extra = 2 * hidden + scalars + grad_bytes
        if sizes:
            internal, beta, working = _sizes(ex, h1)
            working += extra
        else:
            internal = beta = working = None
        if times:
            fg, bw, f1, fk = [], [], [], []
            for _ in _rounds(repeats, min_seconds):
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
        seg = None
        if lengths:
            seg = _segments(ex, h1, lengths, repeats, sizes, times, extra, min_seconds)
        peaks = _stepped_peaks(ex, params) if sizes else None
    finally:
        ex.reset()
        ex.input_grads(False)
        for p, g in zip(params, stash):
            p.grad = g
        rng_restore(rng, ex.cuda_devices)
    costs = _cost_model(fixed, per, t_graph, t_back, hidden if sizes else None, internal, beta,
                        working, seg, peaks)
    return StepReport(costs=costs, hidden_bytes=hidden, internal_bytes=internal or 0,
                      beta_bytes=beta or 0, working_bytes=working or 0,
                      alpha=(internal or 0) / hidden, beta=(beta or 0) / hidden,
                      fused=ex.fused, chain=K, repeats=repeats, grad_bytes=grad_bytes,
                      segments=seg)


def _cost_model(fixed, per, t_graph, t_back, hidden, internal, beta, working, seg, peaks=None):
    kw = dict(run_fixed=fixed, run_per_step=per, forward_graph=t_graph, backward=t_back,
              hidden_bytes=hidden, internal_bytes=internal, beta_bytes=beta,
              working_bytes=working, stepped_peaks=peaks)
    if seg is not None and seg.get("stored_bytes") is not None and seg.get("forward"):
        kw["segments"] = SegmentCosts(**seg)
    return CostModel(**kw)


def probe(step, state0, inputs, **kw) -> CostModel:
    """The planner's :class:`CostModel` for ``step``, measured (seconds and bytes).

    ``membptt.plan(strategy, T, memory="5%", costs=membptt.probe(step, state0, inputs))``
    plans on real sizes and times (on fused blocks when the step offers ``segment``).
    Keywords as :func:`measure_step`.
    """
    return measure_step(step, state0, inputs, **kw).costs


# -- protocol check ---------------------------------------------------------------------------------

def _tol(t):
    """(rtol, atol relative to the largest value). The check is for protocol violations (a wrong
    state, a loss off by a factor), not rounding: float32 fused kernels differ from stepped
    cells by more than float32 rounding (cuDNN uses TF32 by default: about 1e-3 relative)."""
    return (1e-9, 1e-9) if t.dtype == torch.float64 else (1e-2, 5e-3)


def _differ(a, b):
    """A description of how tensors ``a`` and ``b`` differ beyond float tolerance, or None."""
    rtol, atol = _tol(a)
    fa, fb = bool(torch.isfinite(a).all()), bool(torch.isfinite(b).all())
    if not (fa and fb):  # (stepping's own values are checked finite before any comparison)
        if torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(
                torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0)):
            return None
        return ("it has non-finite values (nan or inf) where stepping gives finite ones" if fb
                else "stepping gives non-finite values")
    scale = float(b.abs().max()) if b.numel() else 0.0
    if not torch.allclose(a, b, rtol=rtol, atol=atol * max(scale, 1.0)):
        d = float((a - b).abs().max())
        return f"max |difference| {d:.3g} (values up to {scale:.3g})"
    return None


def _compare(what, got, ref, loss_got, loss_ref):
    for k, (g, r) in enumerate(zip(got, ref)):
        why = _differ(g.detach(), r.detach())
        if why:
            raise ProtocolError(f"{what} disagrees with stepping `step`: state element {k} "
                                f"differs, {why}")
    if loss_got is not None:
        why = _differ(loss_got.detach().reshape(1), loss_ref.detach().reshape(1))
        if why:
            raise ProtocolError(
                f"{what} disagrees with stepping `step`: the summed loss is "
                f"{float(loss_got):.6g}, stepping gives {float(loss_ref):.6g} ({why}; "
                f"ratio {float(loss_got) / float(loss_ref) if float(loss_ref) else math.nan:.4g})")


def _check_finite(i, n, state, loss):
    """Stepping's own results must be finite for the protocol check (and for a plan's sums)."""
    if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
        raise ProtocolError(
            f"step {i}'s loss is {float(loss) if loss.numel() == 1 else 'non-finite'} (stepping "
            f"`step` from state0 over the first {n} steps, which the probe checks): every "
            "step's loss must be finite. A mean over an empty set of terms is nan (e.g. a "
            "masked mean at a step whose mask is all zero): sum the masked terms and divide by "
            "a fixed count, or by mask.sum().clamp(min=1)")
    for k, t in enumerate(state):
        if not bool(torch.isfinite(t).all()):
            raise ProtocolError(
                f"step {i} returns a state whose element {k} has non-finite values (nan or "
                f"inf), stepping `step` from state0 over the first {n} steps: the recurrence "
                "diverges or divides by zero there; the probe needs finite states")


def _kept_tensors(step) -> dict:
    """``{name: (id, version)}`` of the tensors an ``nn.Module`` step keeps as attributes or
    buffers (not parameters): where a step that keeps state of its own keeps it."""
    if not isinstance(step, torch.nn.Module):
        return {}
    out = {}
    for path, m in step.named_modules():
        params = m._parameters
        for name, v in list(vars(m).items()) + list(m._buffers.items()):
            if isinstance(v, torch.Tensor) and name not in params:
                out[f"{path}.{name}" if path else name] = (id(v), v._version)
    return out


def _protocol_check(ex, rng):
    """advance/segment agree with step; a step replays from the same RNG state."""
    n = min(4, ex.T - 1)
    h0 = ex.start()
    with torch.no_grad():
        ref, ref_loss, h = [], None, h0
        for i in range(1, n + 1):
            out, loss = ex.step(ex.user(h), ex.xsteps[i - 1])
            h = ex.check_state(f"step {i}", out)
            _check_finite(i, n, h, loss)
            ref_loss = loss if ref_loss is None else ref_loss + loss
            ref.append(h)
        # replay: the same step from the same RNG state gives the same result
        rng_restore(rng, ex.cuda_devices)
        out1, l1 = ex.step(ex.user(h0), ex.xsteps[0])
        rng_restore(rng, ex.cuda_devices)
        kept = _kept_tensors(ex.step)
        out2, l2 = ex.step(ex.user(h0), ex.xsteps[0])
        try:
            _compare("a second call of `step` from the same state and default-generator RNG "
                     "state", ex.check_state("step 1", out2), ex.check_state("step 1", out1),
                     l2, l1)
        except ProtocolError as e:
            after = _kept_tensors(ex.step)
            changed = sorted(k for k in set(kept) | set(after) if kept.get(k) != after.get(k))
            if changed:
                raise ProtocolError(
                    f"{e}: the step keeps state of its own outside `state`: "
                    f"{', '.join(changed)} changed during one call (e.g. snntorch's "
                    "init_hidden=True keeps the membrane potential in the neuron). membptt "
                    "recomputes steps from stored states, so every recurrent quantity must flow "
                    "through `state`: create the neurons with init_hidden=False and thread "
                    "their state, e.g. `spk, mem = lif(cur, mem)`, returning mem in the new "
                    "state") from None
            raise ProtocolError(
                f"{e}: the step is not reproducible from the same state and default-generator "
                "RNG state: it depends on something else (a private torch.Generator, a "
                "global or closure variable it updates, or nondeterministic kernels); "
                "recomputation could not replay it and gradients would be wrong") from None
        if ex.fused:
            for need_loss in (True, False):
                out, loss = ex.step.advance(ex.user(h0), ex.inputs_of(1, n), need_loss)
                got = ex.check_state(f"steps 1..{n} (step.advance)", out)
                _compare(f"step.advance over steps 1..{n} (need_loss={need_loss})", got,
                         ref[-1], loss if need_loss else None, ref_loss)
                if not need_loss and loss is not None:
                    raise ProtocolError("step.advance(..., need_loss=False) must return None as "
                                        f"its loss, got {type(loss).__name__}")
    if ex.segments and n >= 2:
        with torch.enable_grad():
            out, loss = ex.step.segment(ex.user(h0), ex.inputs_of(1, n))
        got = ex.check(f"steps 1..{n} (step.segment)", out, loss)
        _compare(f"step.segment over steps 1..{n}", got, ref[-1], loss, ref_loss)


# -- timing and sizes -------------------------------------------------------------------------------

def _linked(ex, h, spans, prev=None):
    """Forwards with graph over ``spans`` from ``h``, each linked to the previous record (as
    the executor links consecutive stored internal states); returns the records, newest last."""
    recs = []
    for a, b in spans:
        rec = ex.graph(h, a, b, link=prev)
        recs.append(rec)
        prev, h = rec, rec.cur
    return recs


def _chain(ex, K, h1):
    """Forwards with graph of ``K`` single steps from step 2 (stored, linked into one chain),
    then their backward in one call, as the executor runs a chain of consecutive internal
    states. Returns (forward s, backward s)."""
    spans = [(i, i) for a, b in _steps(ex.T, 2, K) for i in range(a, b + 1)]
    ex.reset()
    dh = tuple(torch.zeros_like(t) for t in h1)
    ex.sync()
    t0 = time.perf_counter()
    recs = _linked(ex, h1, spans)
    ex.sync()
    t1 = time.perf_counter()
    recs.reverse()
    ex.backward(recs, dh=dh, gloss=ex.gloss)
    ex.sync()
    t2 = time.perf_counter()
    ex.reset()
    return t1 - t0, t2 - t1


CHAIN_LENGTHS = (1, 2, 3, 4)


def chain_working_bytes(ex, h, mt, lengths=CHAIN_LENGTHS, segment: int = 1) -> int:
    """Working set of backpropagating chains of linked records, measured (bytes): the largest
    of :func:`chain_working_bytes_by_count` over ``lengths``."""
    return max(chain_working_bytes_by_count(ex, h, mt, lengths, segment).values(), default=0)


def chain_working_bytes_by_count(ex, h, mt, lengths=CHAIN_LENGTHS,
                                 segment: int = 1) -> dict[int, int]:
    """Working set of backpropagating chains of linked records, measured, by record count.

    For each length ``n``: from a held state ``h`` and a held incoming gradient ``dh``, the
    forwards with graph of ``n`` linked records of ``segment`` steps each (single steps when
    ``segment == 1``, fused segments otherwise), then their backward in one call, as the
    executor runs them. What counts is the peak of live bytes (tracker ``mt``) from just before
    the *last* record's forward on, beyond what was live then: the other ``n - 1`` records are
    stored states a plan counts; the last is the working core a plan does not count. Returns
    ``{n: bytes}`` (``n = 1`` is a lone core, as in HSM plans). Longer chains also hold, until
    the chain is done, the parameter gradients summed over it (autograd's accumulation buffer)
    and the gradients flowing between records; measured here it stops growing from 3 single
    steps on.
    """
    out = {}
    for n in lengths:
        spans = _steps(ex.T, 2, n * segment)
        spans = [(a + k * segment, a + (k + 1) * segment - 1)
                 for a, b in spans for k in range((b - a + 1) // segment)]
        if len(spans) < n:
            continue
        spans = spans[:n]
        dh = tuple(torch.zeros_like(t) for t in h)
        recs = _linked(ex, h, spans[:-1])
        prev = recs[-1] if recs else None
        hh = prev.cur if prev is not None else h
        base = mt.current_bytes
        mt.reset_peak()
        recs += _linked(ex, hh, spans[-1:], prev)
        del prev, hh
        recs.reverse()
        ex.backward(recs, dh=dh, gloss=ex.gloss)
        del dh
        out[n] = mt.peak_bytes - base
    return out


def _timed_run(ex, h1, k):
    """Seconds of one graph-free run of k steps (steps 2..k+1, cyclically), as executed (a
    step that takes planned chunk lengths: as one call)."""
    ex.reset()
    spans = _steps(ex.T, 2, k)
    chunk = k if ex.chunked else None
    ex.sync()
    t0 = time.perf_counter()
    h = h1
    for a, b in spans:
        h, _ = ex.run(h, a, b, chunk=chunk)
    ex.sync()
    t = time.perf_counter() - t0
    ex.reset()
    return t


def _record_bytes(ex, h, a, b, mt, link=None):
    """(bytes a stored record of steps a..b keeps, the same without its input state)."""
    refs = [weakref.ref(t.untyped_storage()) for t in h]
    nbytes = [t.untyped_storage().nbytes() for t in h]
    base = mt.current_bytes
    rec = ex.graph(h, a, b, link=link)
    del h
    total = mt.current_bytes - base + sum(nbytes)
    beta = total - sum(n for r, n in zip(refs, nbytes) if r() is not None)
    return rec, total, beta


def _sizes(ex, h1):
    with LiveBytesTracker() as mt:
        # a fresh input state, created inside the tracker (so its storage is counted)
        h, _ = ex.run(tuple(t.clone() for t in h1), 2, 2)
        rec, internal, beta = _record_bytes(ex, h, 3, 3, mt)
        del rec, h
        ex.reset()
        # working set: chains of linked steps (a lone core step included) backpropagated from
        # a held state and a held dh
        h = tuple(t.clone() for t in h1)
        working = chain_working_bytes(ex, h, mt)
        working = max(working, _run_transient(ex, h, mt))
        ex.reset()
        del h
    return internal, max(beta, 1), working


def _run_peak(ex, h, mt, b, chunk=None):
    """The peak transient of the graph-free run of steps 2..b from ``h`` (beyond what is held
    before it), with and without losses, the larger."""
    worst = 0
    for need_loss in (False, True):
        base = mt.current_bytes
        mt.reset_peak()
        out = ex.run(h, 2, b, need_loss=need_loss, chunk=chunk)
        del out
        worst = max(worst, mt.peak_bytes - base)
    return worst


def _run_transient(ex, h, mt):
    """The peak transient of the longest fused run there can be, with and without losses."""
    return _run_peak(ex, h, mt, ex.T) if ex.fused else 0


def _call_transients(ex, h, mt, lengths) -> tuple:
    """The peak transient of one graph-free call of each length (with and without losses,
    the larger; beyond the held input state), made non-decreasing in length (a longer call
    holds no less; a plan's chunk is chosen on these, never on a dip)."""
    out = []
    for L in lengths:
        out.append(max(int(_run_peak(ex, h, mt, 1 + L, chunk=L)), 1, out[-1] if out else 0))
    ex.reset()
    return tuple(out)


RETIME_TOLERANCE = 0.10
RETIME_PASSES = 2


def inverted(lengths, samples, tolerance: float = RETIME_TOLERANCE) -> list:
    """The lengths (sorted) whose median time is above a longer length's by more than
    ``tolerance``, with that longer length: the pairs the probe times again."""
    med = [statistics.median(samples[L]) for L in lengths]
    out = set()
    for i in range(len(lengths) - 1):
        if med[i] > (1 + tolerance) * med[i + 1]:
            out.update((lengths[i], lengths[i + 1]))
    return sorted(out)


def monotone(ys) -> list[float]:
    """The non-decreasing sequence closest to ``ys`` in least squares (pool adjacent
    violators): measured call times by increasing length, with noise dips pooled away."""
    blocks: list[list[float]] = []  # [mean, count]
    for y in ys:
        blocks.append([float(y), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, n1), (m2, n2) = blocks.pop(-2), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return [m for m, n in blocks for _ in range(n)]


# each timing loop runs at least this long (and >= repeats rounds); the environment variable
# MEMBPTT_PROBE_MIN_SECONDS overrides it (the test suite sets 0: its probes time nothing)
MIN_SECONDS = float(os.environ.get("MEMBPTT_PROBE_MIN_SECONDS", "1.0"))
MAX_ROUNDS = 200


def _rounds(repeats: int, min_seconds: float):
    """Round numbers: at least ``repeats``, then more until ``min_seconds`` have passed (at
    most :data:`MAX_ROUNDS`), so that a fast step's medians are taken over enough rounds to
    be stable from probe to probe (``benchmarks/probe_stability.py`` shows the spread)."""
    t0 = time.perf_counter()
    k = 0
    while k < repeats or (time.perf_counter() - t0 < min_seconds and k < MAX_ROUNDS):
        yield k
        k += 1


def _segments(ex, h1, lengths, repeats, sizes, times, extra, min_seconds=0.0):
    """Fused-call measurements by length (see the module docstring).

    Times are taken round-robin: each of the ``repeats`` rounds times every segment length and
    every run length once, so a slow spell of the machine hits all lengths alike (the planner
    compares them) instead of biasing the ones timed during it; medians over rounds."""
    T = ex.T
    fwd, bwd, stored, beta, working, core = [], [], [], [], [], []
    # graph-free runs: powers of four and the uniform lengths ceil(T / K) (a checkpoint
    # schedule's first sweep runs those)
    uniform = uniform_lengths(T, UNIFORM_KS) if T >= UNIFORM_MIN_T else set()
    run_lengths = tuple(sorted({L for L in {*RUN_LENGTHS, *uniform} if L <= T - 1})) or (1,)
    run_seconds = []
    if times:
        f = {L: [] for L in lengths}
        g = {L: [] for L in lengths}
        r = {L: [] for L in run_lengths}

        def time_round(seg_lengths, runs):
            for L in seg_lengths:
                ex.reset()
                dh = tuple(torch.zeros_like(t) for t in h1)
                ex.sync()
                t0 = time.perf_counter()
                rec = ex.graph(h1, 2, 1 + L)
                ex.sync()
                t1 = time.perf_counter()
                ex.backward([rec], dh=dh, gloss=ex.gloss)
                ex.sync()
                t2 = time.perf_counter()
                del rec
                f[L].append(t1 - t0)
                g[L].append(t2 - t1)
            for L in runs:
                r[L].append(_timed_run(ex, h1, L))

        for _ in _rounds(repeats, min_seconds):
            time_round(lengths, run_lengths)
        # a shorter call whose median is above a longer one's by more than RETIME_TOLERANCE
        # had a slow spell (or the longer a fast one): both are timed again, and pooling
        # (below) then sees medians over more rounds instead of averaging an outlier into
        # its neighbours (one paper-size probe priced a 63-step call as a 125-step one)
        for _ in range(RETIME_PASSES):
            seg = sorted(set(inverted(lengths, f)) | set(inverted(lengths, g)))
            runs = inverted(run_lengths, r)
            if not seg and not runs:
                break
            for _ in range(repeats):
                time_round(seg, runs)
        # medians over rounds, then made non-decreasing in length (a longer call does not
        # cost less: a dip is noise, and a plan chosen on it would change from probe to probe)
        fwd = monotone([statistics.median(f[L]) for L in lengths])
        bwd = monotone([statistics.median(g[L]) for L in lengths])
        run_seconds = monotone([statistics.median(r[L]) for L in run_lengths])
    grid = core_lengths(lengths) if sizes else ()
    lone = {}
    for L in lengths:
        if sizes:
            with LiveBytesTracker() as mt:
                h, _ = ex.run(tuple(t.clone() for t in h1), 2, 2)
                rec, s, b = _record_bytes(ex, h, 3, 2 + L, mt)
                del rec, h
                ex.reset()
                h = tuple(t.clone() for t in h1)
                w = chain_working_bytes_by_count(ex, h, mt, (1, 2, 3), segment=L)
                ex.reset()
                del h
            stored.append(int(s))
            beta.append(int(max(b, 1)))
            working.append(int(max(w.values()) + extra))
            lone[L] = int(w[1] + extra)
    for L in grid:  # the lone cores between the timed lengths (one call and its backward)
        if L not in lone:
            with LiveBytesTracker() as mt:
                h = tuple(t.clone() for t in h1)
                lone[L] = int(chain_working_bytes_by_count(ex, h, mt, (1,), segment=L)[1]
                              + extra)
                ex.reset()
                del h
    run_transient = 0
    run_bytes = None
    if sizes:
        with LiveBytesTracker() as mt:
            h = tuple(t.clone() for t in h1)
            run_transient = _run_transient(ex, h, mt)
            if ex.chunked and times:
                run_bytes = _call_transients(ex, h, mt, run_lengths)
            del h
        # non-decreasing in length (a core of more steps holds no less; bytes between grid
        # points are priced at the next point up, which is then never below a shorter one)
        for L in grid:
            core.append(max(lone[L], run_transient + extra, core[-1] if core else 0))
        by_len = dict(zip(grid, core))
        working = [max(w, run_transient + extra, by_len[L]) for L, w in zip(lengths, working)]
    return {
        "lengths": tuple(lengths),
        "forward": tuple(fwd) if times else None,
        "backward": tuple(bwd) if times else None,
        "stored_bytes": tuple(stored) if sizes else None,
        "beta_bytes": tuple(beta) if sizes else None,
        "working_bytes": tuple(working) if sizes else None,
        "core_bytes": tuple(core) if sizes else None,
        "core_lengths": grid if sizes else None,
        "run_lengths": run_lengths if times else None,
        "run_seconds": tuple(run_seconds) if times else None,
        "run_bytes": run_bytes,
    }


STEPPED_LENGTHS = (8, 32)


def _stepped_peaks(ex, params, lengths=STEPPED_LENGTHS) -> tuple:
    """Plain stepped BPTT's live-bytes peak over the first ``n`` steps, for two lengths
    ``n`` (``lengths`` capped by ``T``): the user's step called ``n`` times under autograd from
    ``h_0``, the summed loss backpropagated once into the parameters, whose gradients start
    absent and so are counted (as in a first iteration, or after ``zero_grad()``). Input and
    ``h_0`` gradients are not taken (they are the caller's tensors). The base of percentage
    budgets (:func:`membptt.planning.budget.stepped_bptt_bytes`): a plain BPTT's peak is
    affine in ``T``, so two lengths give it at any ``T``. Returns ``((n, bytes), ...)``."""
    top = min(lengths[-1], ex.T)
    ns = (min(lengths[0], max(1, top // 2)), top)
    grads = [p.grad for p in params]
    out = []
    try:
        for n in ns:
            for p in params:
                p.grad = None
            with LiveBytesTracker() as mt, torch.enable_grad():
                h, total = ex.user(ex.start()), None
                for i in range(1, n + 1):
                    h, loss = ex.step(h, ex.xsteps[i - 1])
                    total = loss if total is None else total + loss
                if params and total.requires_grad:  # h_n held, as a caller holds it
                    torch.autograd.backward(total, inputs=params)
                del h, total, loss
                out.append((n, max(1, int(mt.peak_bytes))))
    finally:
        for p, g in zip(params, grads):
            p.grad = g
    return tuple(out)


def working_set_bytes(step, state0, inputs, *, chain: bool = False) -> int:
    """Working set of one executor step beyond stored states (bytes), measured the way the
    executor runs a core step: from a held input state and a held incoming gradient ``dh``,
    with parameter gradients already allocated (as after the first backward of an iteration),
    plus two hidden states (the cursor and ``dh``). With ``chain=True``: the largest such
    excess over chains of 1-4 linked steps backpropagated by one call, which also hold the
    parameter gradients summed over the chain until it is done. The parameter gradients
    themselves are *not* included (the caller adds them where they count)."""
    ex = Executor(step, state0, inputs, preserve_rng_state=False)
    h1 = tuple(t.detach().clone() for t in ex.start())
    rec = ex.graph(h1, 1)
    params = _params_of([rec.loss] + list(rec.out), rec)
    del rec
    stash = [p.grad for p in params]
    try:
        for p in params:
            p.grad = torch.zeros_like(p)
        ex.gloss = torch.ones((), dtype=h1[0].dtype, device=h1[0].device)
        with LiveBytesTracker() as tr:
            peak = chain_working_bytes(ex, h1, tr, CHAIN_LENGTHS if chain else (1,))
    finally:
        ex.reset()
        for p, g in zip(params, stash):
            p.grad = g
    return int(peak + 2 * state_bytes(h1))


def alpha_beta_units(report: StepReport) -> tuple[int, int]:
    """(alpha, beta) in hidden-state units, rounded up as the planners do."""
    return (max(1, math.ceil(report.alpha)), max(1, math.ceil(report.beta)))
