"""Measured plan selection: :func:`tune` times a few candidate plans in the executor and keeps
the fastest.

The planner chooses by *predicted* time: the probe's prices of isolated calls, summed over the
plan. Those prices are right call by call (a call of ``L`` steps repeated in a loop costs what
the probe measured, within a few percent), but a whole iteration is not a sum of isolated
calls: at the paper's sizes on a CPU, the checkpoint's own schedule (HSM on blocks of
``ceil(T / K)`` steps) ran 6-14 % faster than its prediction and MSM blocks of 16 steps 4-9 %
slower than theirs (``results/peers/peers_paper_cpu_core*.csv``, ``docs/executor-speed.md``),
which is enough to put the planner's choice above ``torch.utils.checkpoint`` at the
checkpoint's own memory. The allocator's history (which freed blocks a call's tensors land
in, page faults on fresh memory) depends on what else the iteration holds, so no per-call
price captures it. What does is the iteration itself, timed.

``tune`` does what an autotuner does (``torch.backends.cudnn.benchmark``, Triton's
``autotune``): it builds a small set of plans that all fit the budget by the planner's own
accounting, runs each as a real iteration (``membptt.bptt(...).backward()``) round-robin for a
few rounds, and returns the one whose per-round time ratio to the planner's choice is lowest,
if it is lower by more than ``margin`` (else the planner's choice: ties and noise keep the
predicted plan, so a quiet machine gives the same plan twice). The candidates
(:func:`candidates`):

* the planner's choice (``membptt.plan`` with ``planner="auto"``, least predicted time);
* the best plan of every other planner that applies (``steps``, ``blocks``, ``chains``,
  :func:`membptt.planning.plans`);
* with ``planner="auto"``, for ``hsm`` and ``msm`` on fused segments with a byte or percentage
  budget, the checkpoint's own schedules that fit: HSM on blocks of ``ceil(T / K)`` steps for
  the ``peers`` smallest ``K`` in :data:`~membptt.execution.probe.UNIFORM_KS` whose plan fits (what a
  ``torch.utils.checkpoint`` user with this memory would run; the executor runs it at or below
  the checkpoint's time, ``benchmarks/bench_peers.py``'s ``own K`` rows).

Candidates predicted more than :data:`TUNE_PREDICTED` (1.5) times the planner's choice are
left out (no pricing error measured so far comes near that), and so is a duplicate.

Every candidate is an exact plan of the strategy's family within the budget (HSM plans are MSM
plans that store no internal state), so the gradients are plain BPTT's whichever is picked.
The timing has no side effect: it runs on detached copies of ``state0`` and ``inputs`` (no
gradient reaches the caller's graph upstream of them), the parameters' ``.grad`` are put back
as they were (also when an iteration raises) and the global RNG state is restored. The returned plan says what was measured in
``plan.info["tune"]``.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch.utils._pytree import tree_map

from ..planning import BudgetTooSmall, PlanTooLarge
from ..planning import plan as make_plan
from ..planning import plans as make_plans
from .executor import (
    Executor,
    _as_tensors,
    bptt,
    module_params,
    rng_restore,
    rng_snapshot,
)
from .probe import UNIFORM_KS, _check_int, _params_of, check_min_seconds, probe

__all__ = ["tune", "candidates", "pick", "choose", "time_plans", "TUNE_MARGIN", "TUNE_PEERS",
           "TUNE_PRUNE"]

TUNE_MARGIN = 0.02  # another candidate replaces the planner's choice only when this much faster
TUNE_PEERS = 2  # the checkpoint schedules with the fewest segments that fit
TUNE_PRUNE = 0.15  # after a round, candidates this much slower than the fastest stop running
TUNE_MAX_ROUNDS = 50
TUNE_ROUNDS = 3  # rounds at least (membptt.tune's default; wrap and scan use it)
# candidates predicted this much slower than the planner's choice are not timed (predictions
# were off by at most about 20 % on whole iterations: docs/executor-speed.md)
TUNE_PREDICTED = 1.5


def _same(a, b) -> bool:
    """The same calls (an MSM plan that stores no internal state is an HSM plan)."""
    return (a.planner == b.planner and a.block == b.block and a.forward_ops == b.forward_ops
            and a.segment_ends == b.segment_ends and tuple(a.ops) == tuple(b.ops))


def _label(p, peer=None) -> str:
    what = f"{p.strategy} {p.planner}, {p.shape}"
    return f"checkpoint K={peer}: {what}" if peer is not None else what


def candidates(strategy: str, seq_len: int, memory, *, costs, planner: str = "auto",
               peers: int = TUNE_PEERS, **plan_kw) -> list[tuple[str, object]]:
    """``[(label, Plan), ...]``: the plans :func:`tune` times, the planner's choice first.

    Raises what ``membptt.plan`` raises for the planner's choice (a budget below the minimum,
    a bad option); a peer schedule that does not fit is left out.
    """
    if isinstance(peers, bool) or not isinstance(peers, int) or peers < 0:
        raise ValueError(f"peers must be an integer >= 0 (checkpoint schedules to try), got "
                         f"{peers!r}")
    block = plan_kw.pop("block", None)
    found = make_plans(strategy, seq_len, memory, costs=costs, planner=planner, block=block,
                       **plan_kw)
    best = found[0]
    out = [(_label(best), best)]

    def add(p, peer=None):
        if p.predicted_cost > TUNE_PREDICTED * best.predicted_cost:
            return  # far slower by prediction: no pricing error we have seen makes it win
        if not any(_same(p, q) for _, q in out):
            out.append((_label(p, peer), p))

    for p in found[1:]:
        add(p)
    budget = best.budget
    sized = budget is not None and budget.bytes is not None
    if (strategy in ("hsm", "msm") and planner == "auto" and block is None
            and costs is not None and costs.segments is not None and sized and peers):
        fitted = 0
        seen = set()
        for K in sorted(UNIFORM_KS):
            k = -(-seq_len // K)
            if k in seen or K > seq_len:
                continue
            seen.add(k)
            try:
                p = make_plan("hsm", seq_len, memory, costs=costs, block=k, **plan_kw)
            except (BudgetTooSmall, PlanTooLarge):
                continue
            add(p, peer=K)
            fitted += 1
            if fitted >= peers:
                break
    return out


def pick(times: dict, margin: float = TUNE_MARGIN) -> tuple[int, dict]:
    """``(index, ratios)``: the candidate to keep, from per-round seconds ``times`` (index ->
    list, ``None`` for a round a pruned candidate sat out; index 0 is the planner's choice,
    timed every round). ``ratios[i]`` is the median over rounds of ``times[i] / times[0]``; the
    least one wins if it is below ``1 - margin``, else index 0; ties go to the lower index."""
    if not (isinstance(margin, (int, float)) and not isinstance(margin, bool)
            and math.isfinite(margin) and 0 <= margin < 1):
        raise ValueError(f"margin must be a number in [0, 1), got {margin!r}")
    base = times[0]
    ratios = {}
    for i, ts in times.items():
        rs = [t / b for t, b in zip(ts, base) if t is not None and b is not None and b > 0]
        ratios[i] = statistics.median(rs) if rs else math.inf
    win = min(ratios, key=lambda i: (ratios[i], i))
    return (win if ratios[win] < 1 - margin else 0), ratios


def _detached(tree):
    """``tree`` with every tensor detached (``requires_grad`` kept): tuning iterations send no
    gradient into the caller's graph upstream of ``state0`` / ``inputs``."""
    return tree_map(lambda t: t.detach().requires_grad_(t.requires_grad)
                    if isinstance(t, torch.Tensor) and t.is_floating_point() else t, tree)


def _params(step, state0, inputs) -> tuple[list, list]:
    """``(tensors whose .grad an iteration touches, CUDA devices)``: the step's parameters
    (an ``nn.Module``'s and every leaf requiring grad found by walking one step's graph, so
    tensors it closes over count too) and the devices of the state, inputs and parameters."""
    ex = Executor(step, state0, inputs, fused=False, segments=False, preserve_rng_state=False)
    rng = rng_snapshot(ex.cuda_devices)
    try:
        with torch.enable_grad():
            rec = ex.graph(ex.start(), 1)
            walked = _params_of([rec.loss, *rec.out], rec)  # not the record's own leaf copies
            del rec
    finally:
        ex.reset()
        rng_restore(rng, ex.cuda_devices)
    seen, out = set(), []
    for t in (*(module_params(step) or ()), *walked):
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    devs = set(ex.cuda_devices) | {t.device for t in out if t.device.type == "cuda"}
    return out, sorted(devs, key=str)


def tune(step, state0, inputs, strategy: str = "msm", memory=None, *, costs=None,
         planner: str = "auto", rounds: int = TUNE_ROUNDS, min_seconds: float | None = None,
         margin: float = TUNE_MARGIN, peers: int = TUNE_PEERS, **plan_kw):
    """The fastest of a few candidate plans under ``memory``, timed as real iterations.

    ``membptt.tune(step, state0, inputs, "msm", memory="5%")`` probes the step (unless
    ``costs`` are given), plans, builds the candidates of :func:`candidates` and times each
    one (``membptt.bptt(step, state0, inputs, p).backward()``): one untimed warm-up each
    (a candidate more than 30 % slower than the fastest warm-up stops there), then at least
    ``rounds`` rounds, round-robin in a rotating order, and more until ``min_seconds`` have
    passed (default the probe's, 1 s; those extra rounds stop at 50); after each round a
    candidate more than 15 % slower than the fastest so far sits out the rest. The planner's
    choice is replaced only by a candidate whose median per-round time ratio to it is below
    ``1 - margin``.

    Returns the chosen ``membptt.Plan``; ``plan.info["tune"]`` lists every candidate with its
    predicted and measured seconds, its ratio to the planner's choice, and which was picked.
    Other keywords go to ``membptt.plan`` (``alpha``, ``beta``, ``percent_of``, ...). With
    ``planner`` other than ``"auto"`` only that planner's plan is a candidate, and with
    ``block`` only that block plan: nothing is timed then.
    """
    _check_int("rounds", rounds, 1)
    min_seconds = check_min_seconds(min_seconds)
    pick({0: [1.0]}, margin)  # checks margin before anything runs
    xs, _ = _as_tensors(inputs, "inputs")  # (before a probe of many seconds)
    if xs[0].dim() == 0:
        raise ValueError("inputs must have time on dim 0, got a 0-dim tensor")
    T = int(xs[0].shape[0])
    t_start = time.perf_counter()
    if costs is None:
        costs = probe(step, state0, inputs)
    cands = candidates(strategy, T, memory, costs=costs, planner=planner, peers=peers,
                       **plan_kw)
    times = _time(step, state0, inputs, [p for _, p in cands], rounds, min_seconds)
    return choose(cands, times, costs, margin, t_start)


def choose(cands, times, costs, margin: float = TUNE_MARGIN, t_start: float | None = None):
    """The plan :func:`pick` keeps among ``cands`` (:func:`candidates`) on per-round seconds
    ``times`` (as :func:`time_plans` returns them, ``{0: []}`` for a single plan), with
    ``plan.info["tune"]`` saying what was measured (``t_start``: when tuning began, for
    ``seconds``)."""
    if len(cands) > 1:
        win, ratios = pick(times, margin)
    else:  # nothing to compare
        win, ratios = 0, {0: 1.0}
    chosen = cands[win][1]
    rows = []
    for i, (label, p) in enumerate(cands):
        ts = [t for t in times.get(i, []) if t is not None]
        rows.append({"label": label, "strategy": p.strategy, "planner": p.planner,
                     "block": p.block, "shape": p.shape,
                     "predicted_s": p.predicted_cost if costs.segments is not None else None,
                     "measured_s": statistics.median(ts) if ts else None,
                     "rounds": len(ts), "ratio": ratios.get(i), "picked": i == win})
    chosen.info["tune"] = {
        "picked": cands[win][0], "planner_choice": cands[0][0], "margin": margin,
        "rounds": max((len(v) for v in times.values()), default=0),
        "seconds": time.perf_counter() - t_start if t_start is not None else None,
        "candidates": rows}
    return chosen


def _time(step, state0, inputs, plans, rounds, min_seconds) -> dict:
    """Per-round seconds of one iteration of each plan (``None`` for rounds sat out)."""
    if len(plans) < 2:
        return time_plans(None, plans, [], [], rounds, min_seconds)
    state0, inputs = _detached(state0), _detached(inputs)
    params, cuda = _params(step, state0, inputs)
    return time_plans(lambda p: bptt(step, state0, inputs, p).backward(), plans, params, cuda,
                      rounds, min_seconds)


def time_plans(run, plans, params, cuda, rounds: int, min_seconds: float) -> dict:
    """Per-round seconds of ``run(plan)`` (one iteration) for each of ``plans`` (``None`` for
    rounds a pruned plan sat out): one untimed warm-up each (a plan more than twice
    ``TUNE_PRUNE`` slower than the fastest warm-up stops there), then at least ``rounds``
    rounds round-robin in a rotating order, more until ``min_seconds`` have passed (at most
    :data:`TUNE_MAX_ROUNDS`), pruning after each round; a single plan is not run. ``params``: the tensors whose
    ``.grad`` an iteration touches (set to None before each, put back after, also when one
    raises); ``cuda``: the CUDA devices to synchronise, whose RNG (and the CPU's) is
    restored."""
    if len(plans) < 2:  # nothing to compare: nothing is run
        return {i: [] for i in range(len(plans))}
    saved = [t.grad for t in params]
    rng = rng_snapshot(cuda)

    def sync():
        for d in cuda:
            torch.cuda.synchronize(d)

    def once(p):
        for t in params:
            t.grad = None
        sync()
        t0 = time.perf_counter()
        run(p)
        sync()
        return time.perf_counter() - t0

    n = len(plans)
    times = {i: [] for i in range(n)}
    try:
        warm = [once(p) for p in plans]
        active = [i for i in range(n) if i == 0 or warm[i] <= (1 + 2 * TUNE_PRUNE) * min(warm)]
        t0 = time.perf_counter()
        r = 0
        while r < rounds or (time.perf_counter() - t0 < min_seconds and r < TUNE_MAX_ROUNDS):
            order = active[r % len(active):] + active[:r % len(active)]
            got = {i: once(plans[i]) for i in order}
            for i in range(n):
                times[i].append(got.get(i))
            r += 1
            meds = {i: statistics.median(t for t in times[i] if t is not None) for i in active}
            fastest = min(meds.values())
            active = [i for i in active if i == 0 or meds[i] <= (1 + TUNE_PRUNE) * fastest]
    finally:
        for t, g in zip(params, saved):
            t.grad = g
        rng_restore(rng, cuda)
    return times
