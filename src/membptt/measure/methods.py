"""Benchmark methods: one way each of running one training iteration of the same workload.

A method is one class and one line in :data:`METHODS`. The interface::

    m = METHODS[name](workload, options)   # options: memory budget, alpha, beta, ...
    m.prepare()       # untimed: plans, probes, builds modules
    loss = m.run()    # one iteration: forward + backward; parameter .grad filled; returns loss
    m.info()          # dict of CSV columns this method knows (forward_ops, budget, predictions)

``run`` does not zero gradients (the harness sets ``.grad = None`` before each iteration).
A method never unpacks the state: it steps through any structure the workload's model uses
(:mod:`membptt.models.registry`). A method spec ``name:key=value:...`` (e.g.
``torch-checkpoint-fused:segments=8``, ``msm:memory=5%``) names a method with its own options
(:func:`parse_method_spec`, :func:`make_method`), so one comparison group can sweep them.

Methods:

* ``full``: standard BPTT, the stepped cell loop (``nn.LSTMCell``/``nn.GRUCell``) under plain
  autograd (the paper's baseline with the same cell as ours);
* ``full-fused``: standard BPTT with one fused call (``nn.LSTM``/``nn.GRU``, the model
  registry's ``segment``) over the whole sequence, on the same weights (the fastest thing a
  PyTorch user has; keeps the fused kernel's activations);
* ``torch-checkpoint`` / ``torch-checkpoint-reentrant``: ``torch.utils.checkpoint``
  (``use_reentrant=False`` / ``True``) over ``segments`` balanced segments (option; default
  ``round(sqrt(T))``) of the stepped loop;
* ``torch-checkpoint-fused`` / ``torch-checkpoint-fused-reentrant``: the same over fused
  segments (each one fused call with graph + head + per-step loss): what a PyTorch user with
  long sequences writes;
* ``chen``, ``chen-recursive``, ``hsm``, ``ism``, ``msm``: the planning core's strategies run
  by the executor (``membptt.bptt``) on *probed state sizes* and the paper's unit times
  (forward 1, backward 2), i.e. the paper's algorithms on real byte sizes; ``full-plan`` is
  standard BPTT through the executor (it ignores the budget: executor overhead vs ``full``);
* ``msm-measured`` (and ``hsm-measured``, ``chen-measured``): the same strategy planned on the
  *measured* cost model of ``membptt.probe`` (times of fused runs, graph forwards, backwards);
* ``reversible``: a reversible model's own backward (``rev-gru``, ``rev-lstm``: MacKay et al.
  2018), found in the registry entry's ``extras["reversible_bptt"]``; it stores no state and
  reconstructs each one from the next with its information buffer. Infeasible on a model
  without one. ``full`` and the plan methods run the same reversible cell as an ordinary step.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from ..planning.api import PLANNER_CHOICES, check_planner
from .workload import Workload

__all__ = ["Method", "METHODS", "get_method", "Infeasible", "make_method", "parse_method_spec",
           "OPTION_KEYS"]


class Infeasible(Exception):
    """The method cannot run this point as asked (e.g. a budget below its minimum)."""


class Method:
    name: str = ""
    exact: bool = True  # gradients must equal ``full`` up to float reassociation
    uses_budget: bool = False
    accepts: tuple[str, ...] = ()  # the spec options (name:key=value) this method uses

    def __init__(self, workload: Workload, options: dict | None = None):
        self.w = workload
        self.options = dict(options or {})

    @classmethod
    def check_options(cls, own: dict, options: dict, seq_len: int) -> None:
        """Refuse, before any workload is built, what ``prepare`` would refuse after it.

        ``own`` are the options of the method spec (``name:key=value``), ``options`` those
        merged with the command's (``--segments``, ``--alpha``, ...). An option of the spec
        that this method does not use is refused (it would be silently ignored); the
        command's options apply to the methods that use them. Raises ``ValueError``."""
        unused = [k for k in own if k not in cls.accepts]
        if unused:
            takes = ", ".join(cls.accepts) if cls.accepts else "no options"
            raise ValueError(f"option {unused[0]}={own[unused[0]]!r} is not used by method "
                             f"{cls.name!r} (it takes {takes}); it would be ignored")

    def prepare(self) -> None:
        pass

    def run(self) -> torch.Tensor:
        raise NotImplementedError

    def info(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _Counter:
    """Wrap a step function and count its calls (forward evaluations of the cell)."""

    def __init__(self, step):
        self.step = step
        self.calls = 0

    def __call__(self, state, x_t):
        self.calls += 1
        return self.step(state, x_t)


def _time_slice(inputs, a: int, b: int):
    """``inputs`` (a tensor or a pytree of tensors, time on dim 0) restricted to steps a..b-1."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: t[a:b] if isinstance(t, torch.Tensor) else t, inputs)


def _time_steps(inputs, n: int):
    """The ``n`` per-step inputs ``x_t`` of ``inputs`` (index dim 0 of every tensor leaf)."""
    from torch.utils._pytree import tree_map

    if isinstance(inputs, torch.Tensor):
        return list(inputs[:n].unbind(0))
    if isinstance(inputs, tuple) and all(isinstance(t, torch.Tensor) for t in inputs):
        return list(zip(*[t[:n].unbind(0) for t in inputs]))
    return [tree_map(lambda t, i=i: t[i] if isinstance(t, torch.Tensor) else t, inputs)
            for i in range(n)]


def _seq_len(inputs) -> int:
    from torch.utils._pytree import tree_leaves

    return next(t.shape[0] for t in tree_leaves(inputs) if isinstance(t, torch.Tensor))


def _run_steps(step, state, xs):
    """Every step of ``xs`` (time on dim 0) with graph; returns the state and the summed loss.

    The state is passed through untouched: any structure the step accepts works.
    """
    total = None
    for x_t in _time_steps(xs, _seq_len(xs)):
        state, loss = step(state, x_t)
        total = loss if total is None else total + loss
    return state, total


class Full(Method):
    """Standard BPTT: the stepped loop under plain autograd (every step's graph kept)."""

    name = "full"

    def prepare(self):
        self._step = _Counter(self.w.step)

    def run(self):
        _, loss = _run_steps(self._step, self.w.state0, self.w.inputs)
        loss.backward()
        return loss.detach()

    def info(self):
        T = self.w.config.seq_len
        return {"forward_ops": T, "backward_ops": T}


def _require_segment(w: Workload, method: str) -> None:
    """Fused methods need the model's fused segment: :class:`Infeasible` without one."""
    if not w.has_segment:
        model = w.entry.name if w.entry is not None else type(w.model).__name__
        raise Infeasible(f"{method} needs a fused segment, and model {model!r} has none "
                         "(its registry entry's `segment` is None)")


class FullFused(Method):
    """Standard BPTT with one fused call over the whole sequence (the model's ``segment``)."""

    name = "full-fused"

    def prepare(self):
        _require_segment(self.w, self.name)

    def run(self):
        loss = self.w.fused_loss()
        loss.backward()
        return loss.detach()

    def info(self):
        T = self.w.config.seq_len
        return {"forward_ops": T, "backward_ops": T, "params": "fused"}


class Reversible(Method):
    """A reversible model's own backward: ``extras["reversible_bptt"](model, state0, inputs,
    stats=...)`` of the model's registry entry (:func:`membptt.models.reversible_bptt`).

    Its forward keeps only ``h_T`` and the information buffers; its backward reconstructs every
    state and rebuilds one step's graph at a time. The gradients equal plain autograd through
    the same fixed-point forward (``full``). ``info()`` adds the buffer after the last run:
    ``buffer_bits_{allocated,stored,optimal}`` (bits per state unit per step, to set beside the
    32 bits of a float32 hidden state), ``buffer_bytes`` and ``state_units`` (fixed-point values
    per batch element: ``hidden`` for RevGRU, ``2 * hidden`` for RevLSTM). Caveat: the state of
    a reversible model is ``float64`` whatever the workload's dtype.
    """

    name = "reversible"

    def prepare(self):
        extras = self.w.entry.extras if self.w.entry is not None else {}
        fn = extras.get("reversible_bptt")
        if fn is None:
            model = self.w.entry.name if self.w.entry is not None else type(self.w.model).__name__
            raise Infeasible(f"{self.name} needs a reversible backward, and model {model!r} has "
                             "none (its registry entry's extras lack 'reversible_bptt'; "
                             "reversible models: rev-gru, rev-lstm)")
        self._backward = fn
        self.stats = extras["stats"]() if "stats" in extras else None

    def run(self):
        kw = {} if self.stats is None else {"stats": self.stats}
        loss = self._backward(self.w.model, self.w.state0, self.w.inputs, **kw)
        loss.backward()
        return loss.detach()

    def info(self):
        T = self.w.config.seq_len
        # forward ops: the first sweep and one forward with graph per step; the T inverses apart
        d = {"forward_ops": 2 * T, "backward_ops": T, "params": f"inverse_ops={T}"}
        st = self.stats
        if st is not None and st.steps:
            d.update({f"buffer_bits_{k}": st.per_unit_step(k)
                      for k in ("allocated", "stored", "optimal")})
            d["buffer_bytes"] = st.buffer_bytes
            d["state_units"] = st.units // self.w.config.batch
        return d


def balanced_segments(t: int, k: int) -> list[int]:
    """``k`` segment lengths summing to ``t``, differing by at most one (shorter first)."""
    if not isinstance(t, int) or t < 1 or not isinstance(k, int) or not 1 <= k <= t:
        raise ValueError(f"need integers 1 <= k <= t, got t={t!r}, k={k!r}")
    q, r = divmod(t, k)
    return [q] * (k - r) + [q + 1] * r


def segment_count(options: dict, seq_len: int) -> int:
    """The ``segments`` option (default ``round(sqrt(T))``), checked: an integer in 1..T."""
    k = options.get("segments")
    if k is None:
        return max(1, round(math.sqrt(seq_len)))
    if isinstance(k, str) and k.strip().isdigit():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= seq_len:
        raise ValueError(f"segments must be an integer from 1 to the sequence length "
                         f"{seq_len}, got {k!r}")
    return k


class TorchCheckpoint(Method):
    """``torch.utils.checkpoint`` over ``segments`` balanced segments (default round(sqrt T)).

    Each segment is checkpointed as one function of the state's tensors (flattened with
    ``torch.utils._pytree``, so any state structure works) and the segment's inputs; it returns
    the new state's tensors and the segment's summed loss. Subclasses choose:

    * ``fused``: ``False`` runs the stepped cell loop in the segment; ``True`` runs one fused
      call with graph (the model's ``segment``: ``nn.LSTM``/``nn.GRU``, head, per-step loss),
      what a PyTorch user with long sequences writes;
    * ``reentrant``: ``use_reentrant`` of ``torch.utils.checkpoint``. The reentrant mode needs a
      segment input that requires grad, else the segment's parameter gradients are silently
      dropped: the first segment gets a detached copy of ``state0`` that requires grad (the
      usual workaround; its gradient is computed and discarded).

    ``forward_ops`` counts the steps actually evaluated during the last ``run`` (first sweep
    plus recomputation: ``2T``). Memory: about ``K`` stored states plus one segment's
    activations (``T/K`` steps; for fused segments the fused kernel's, which are smaller
    and faster than the stepped loop's).
    """

    name = "torch-checkpoint"
    fused = False
    reentrant = False
    accepts = ("segments",)

    @classmethod
    def check_options(cls, own: dict, options: dict, seq_len: int) -> None:
        super().check_options(own, options, seq_len)
        segment_count(options, seq_len)

    def prepare(self):
        if self.fused:
            _require_segment(self.w, self.name)
        T = self.w.config.seq_len
        self.segments = balanced_segments(T, segment_count(self.options, T))
        self._steps = 0

    def _segment_fn(self, spec, n_state):
        from torch.utils._pytree import tree_flatten, tree_unflatten

        def fn(*args):
            state = tree_unflatten(list(args[:n_state]), spec)
            xs = args[n_state]
            if self.fused:
                self._steps += _seq_len(xs)  # counted before: a recomputation may stop early
                new, loss = self.w.segment(state, xs)
            else:
                new, loss = _run_steps(self._count_step, state, xs)
            leaves, new_spec = tree_flatten(new)
            if new_spec != spec:
                raise ValueError(f"the step changed the state's structure: {spec} -> {new_spec}")
            return (*leaves, loss)

        return fn

    def _count_step(self, state, x_t):
        self._steps += 1
        return self.w.step(state, x_t)

    def run(self):
        from torch.utils._pytree import tree_flatten

        leaves, spec = tree_flatten(self.w.state0)
        if self.reentrant:
            leaves = [t.detach().requires_grad_() if t.is_floating_point() else t
                      for t in leaves]
        fn = self._segment_fn(spec, len(leaves))
        total = None
        a = 0
        self._steps = 0
        for s in self.segments:
            xs = _time_slice(self.w.inputs, a, a + s)
            out = checkpoint(fn, *leaves, xs, use_reentrant=self.reentrant)
            leaves, loss = list(out[:-1]), out[-1]
            total = loss if total is None else total + loss
            a += s
        total.backward()
        self._calls = self._steps
        return total.detach()

    def info(self):
        T = self.w.config.seq_len
        d = {"backward_ops": T,
             "params": (f"segments={len(self.segments)} fused={str(self.fused).lower()} "
                        f"reentrant={str(self.reentrant).lower()}")}
        # steps evaluated during the last run (first sweep + recomputation)
        d["forward_ops"] = getattr(self, "_calls", 2 * T)
        return d


def _checkpoint_method(name: str, fused: bool, reentrant: bool) -> type[TorchCheckpoint]:
    cls_name = "Checkpoint_" + name.replace("-", "_")
    return type(cls_name, (TorchCheckpoint,), {"name": name, "fused": fused,
                                               "reentrant": reentrant})


def probe_report(w: Workload):
    """``membptt.execution.measure_step`` of the workload's step, probed once per workload.

    Every plan method of one benchmark process plans on the same probe, so their predictions
    are comparable.
    """
    rep = getattr(w, "_probe_report", None)
    if rep is None:
        from membptt.execution import measure_step

        rep = measure_step(w.step_fn, w.state0, w.inputs)
        w._probe_report = rep
    return rep


def step_working_bytes(w: Workload, chain: bool = False) -> int:
    """Peak live bytes of one step's forward with graph and its backward, plus two hidden states.

    Measured with :class:`LiveBytesTracker` through the executor's own primitives, the way it
    runs a core step: from a held input state and a held incoming gradient ``dh``, with
    parameter gradients already allocated (as after the first backward of an iteration, so
    what is counted includes the per-step weight-gradient temporaries that are added into
    ``.grad``). Two hidden states are added for the cursor and ``dh`` (held by the executor,
    counted by no plan). With ``chain=True``: the largest such excess over chains of 1-4
    linked steps backpropagated by one call, as the executor runs consecutive stored internal
    states (:func:`membptt.execution.probe.chain_working_bytes`); a chain also holds the
    parameter gradients summed over it until it is done. Cached on the workload.
    """
    from membptt.execution import working_set_bytes as measured  # excludes parameter gradients

    key = "_step_working_bytes_chain" if chain else "_step_working_bytes"
    cached = getattr(w, key, None)
    if cached is None:
        cached = measured(w.step_fn, w.state0, w.inputs, chain=chain)
        setattr(w, key, cached)
    return cached


def iteration_working_bytes(w: Workload, plan=None, *, chains: bool | None = None) -> int:
    """The working-set constant ``W``: measured peak ~= predicted peak bytes + ``W``.

    A plan's ``peak_bytes`` counts the states it *stores* (beyond ``h_0``). During an iteration
    the executor also holds what no plan stores and no budget can remove::

        W = grad_bytes + step_working_bytes
        grad_bytes         = bytes of the parameter gradients (created by the iteration; the
                             tracker counts them: .grad is None before the iteration)
        step_working_bytes = the working core (one step's forward with graph) and its
                             backward's temporaries, plus the cursor and dh
                             (:func:`step_working_bytes`)

    For a ``plan`` whose program links consecutive internal states into chains that one
    backward call backpropagates (:func:`chains_of`), ``step_working_bytes`` is that of a step
    in such a chain, which also holds the parameter gradients summed over the chain until it
    is done. When the only chain is in the first backward call (``full``), that sum becomes
    ``.grad`` itself, so ``W = max(grad_bytes + step_working_bytes, chain working bytes)``;
    ``chains=True`` asks for the later-chain ``W`` without a plan.

    It depends on the model and batch (and on whether the plan has chains), not on the
    budget or ``T``. The tests check
    ``|peak_bytes - (predicted + W)| <= 5%`` for every plan strategy. Not in ``W``: the
    transient of a fused graph-free run (``step.advance`` processes up to ``fused_chunk`` steps
    per kernel call; ``membptt.execution.measure_step(...).working_bytes`` includes it). It is
    live only during a run; at T = 1000, hidden 256, batch 64 the peak never falls in one
    (measured excess 0.94-1.00 W for every strategy), but a plan that runs a long fused run
    while holding its peak number of states can exceed ``predicted + W`` by up to that
    transient minus the step's working set.
    """
    grad = sum(p.numel() * p.element_size() for p in w.parameters() if p.requires_grad)
    where = ("later" if chains else "none") if chains is not None else (
        chains_of(plan) if plan is not None else "none")
    if where == "none":
        return int(grad + step_working_bytes(w))
    chain = step_working_bytes(w, chain=True)
    if where == "first":  # its summed parameter gradients become .grad: counted once
        return int(max(grad + step_working_bytes(w), chain))
    return int(grad + chain)


def chains_of(plan) -> str:
    """Where the executor backpropagates consecutive steps of ``plan`` in one call: ``"none"``,
    ``"first"`` (only in its first backward call) or ``"later"``."""
    from membptt.execution import compiled

    return compiled(plan).chain_placement()


class PlanMethod(Method):
    """A planning-core strategy executed by ``membptt.bptt``.

    ``prepare`` probes the step (``membptt.probe``: state sizes and times), then plans with the
    probed sizes and either the paper's unit times (``measured = False``) or the probed times
    (``measured = True``). The options ``memory``, ``alpha``, ``beta`` go to ``membptt.plan``.
    """

    strategy = "msm"
    measured = False
    uses_budget = True
    ignores_budget = False  # full-plan: standard BPTT through the executor, budget-free
    accepts = ("memory", "alpha", "beta")  # and block for the -measured methods

    @classmethod
    def check_options(cls, own: dict, options: dict, seq_len: int) -> None:
        """Options of the spec: memory (not for full-plan), alpha, beta, block (-measured
        methods only); alpha/beta finite numbers >= 1 with beta <= alpha (as ``membptt.plan``
        rounds them up), a block ``membptt.plan`` takes for this strategy."""
        for key in ("planner", "block", "tune"):
            if key in own and not cls.measured:
                raise ValueError(f"option {key}={own[key]!r}: fused planners price calls by "
                                 f"their measured costs; use {cls.strategy}-measured")
        if "memory" in own and cls.ignores_budget:
            raise ValueError(f"option memory={own['memory']!r} is not used by method "
                             f"{cls.name!r} (it stores every state; it takes alpha, beta)")
        accepts = cls.accepts + (("planner", "block", "tune") if cls.measured else ())
        unused = [k for k in own if k not in accepts]
        if unused:
            raise ValueError(f"option {unused[0]}={own[unused[0]]!r} is not used by method "
                             f"{cls.name!r} (it takes {', '.join(accepts)}); it would be "
                             "ignored")
        sizes = {}
        for key in ("alpha", "beta"):
            v = options.get(key)
            if v is None:
                continue
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    or not 1 <= v < 2**63):
                raise ValueError(f"{key} must be a finite number >= 1 (internal-state size in "
                                 f"hidden-state units), got {v!r}")
            sizes[key] = math.ceil(v)
        if len(sizes) == 2 and sizes["beta"] > sizes["alpha"]:
            raise ValueError(f"beta must be <= alpha (a stored input makes an internal state "
                             f"smaller), got beta={options['beta']!r} > "
                             f"alpha={options['alpha']!r}")
        planner, block = options.get("planner", "auto"), options.get("block")
        if cls.measured and (planner != "auto" or block is not None):
            try:
                check_planner(cls.strategy, planner, block)
            except ValueError as e:
                raise ValueError(f"option {'block' if block is not None else 'planner'}="
                                 f"{block if block is not None else planner!r}: {e}") from None

    def prepare(self):
        import membptt

        self.report = probe_report(self.w)
        self.probed = self.report.costs
        costs = self.probed
        kw = {k: self.options[k] for k in ("alpha", "beta") if self.options.get(k) is not None}
        if not self.measured:
            # the paper's algorithm: stepped execution priced at unit times (forward 1,
            # backward 2) on the probed state sizes; no fused blocks
            costs = costs.with_(run_fixed=0.0, run_per_step=1.0, forward_graph=1.0, backward=2.0,
                                segments=None)
        memory = None if self.ignores_budget else self.options.get("memory")
        for key in ("planner", "block", "tune"):  # the planner's choice, or an expert's
            if self.options.get(key) is not None:
                if not self.measured:
                    raise ValueError(f"option {key}={self.options[key]!r}: fused planners "
                                     "price calls by their measured costs; use "
                                     f"{self.strategy}-measured")
                if key != "tune":
                    kw[key] = self.options[key]
        try:
            if self.options.get("tune"):  # timed among candidates (membptt.tune)
                self.plan = membptt.tune(self.w.step_fn, self.w.state0, self.w.inputs,
                                         self.strategy, memory, costs=costs, **kw)
            else:
                self.plan = membptt.plan(self.strategy, self.w.config.seq_len, memory,
                                         costs=costs, **kw)
        except (membptt.BudgetTooSmall, membptt.PlanTooLarge) as e:  # a point off-limits
            raise Infeasible(str(e)) from e
        # the same plan priced by the probed (measured) costs as it runs: predicted seconds
        self.predicted_measured = self.plan.predict(self.probed)

    def run(self):
        import membptt

        loss = membptt.bptt(self.w.step_fn, self.w.state0, self.w.inputs, self.plan)
        loss.backward()
        return loss.detach()

    def info(self):
        p, c = self.plan, self.probed
        b = p.budget
        d = {
            "strategy": p.strategy,
            "cost_model": "measured" if self.measured else "unit",
            "alpha": p.alpha,
            "beta": p.beta,
            "budget_requested": b.requested if b else None,
            "budget_units": b.units if b else None,
            "budget_bytes": b.bytes if b else None,
            "forward_ops": p.forward_ops,
            "backward_ops": p.backward_ops,
            "graph_forwards": p.graph_forwards,
            "predicted_peak_units": p.peak_memory,
            "predicted_peak_bytes": p.peak_bytes,
            "predicted_total_peak_bytes": p.predicted_peak_bytes,
            "planner": p.planner,
            "block": p.block,
            "predicted_cost": p.predicted_cost,
            "predicted_time_s": self.predicted_measured.total_cost,
            "working_set_bytes": iteration_working_bytes(self.w, self.plan),
            "hidden_bytes": c.hidden_bytes,
            "internal_bytes": c.internal_bytes,
            "beta_bytes": c.beta_bytes,
            "probe_run_fixed_s": c.run_fixed,
            "probe_run_per_step_s": c.run_per_step,
            "probe_forward_graph_s": c.forward_graph,
            "probe_backward_s": c.backward,
        }
        info = {k: v for k, v in p.info.items() if isinstance(v, (int, float, str))}
        cap = getattr(getattr(p, "prediction", None), "run_cap", None)
        if cap is not None:  # the longest graph-free fused call the plan makes
            info["run_cap"] = cap
        tuned = p.info.get("tune")
        if tuned:  # membptt.tune: what it timed and kept (short form, no spaces)
            rows = tuned["candidates"]
            short = {r["label"]: f"{r['strategy']}/{r['planner']}"
                     + (f"/{r['block']}" if r["block"] else "") for r in rows}
            info["tune_picked"] = short[tuned["picked"]]
            info["tune_choice"] = short[tuned["planner_choice"]]
            info["tune_ratio"] = round(next(r["ratio"] for r in rows if r["picked"]), 4)
            info["tune_candidates"] = len(rows)
            info["tune_s"] = round(tuned["seconds"], 2)
        if info:
            d["params"] = " ".join(f"{k}={v}" for k, v in sorted(info.items()))
        return d


def _plan_method(strategy: str, measured: bool = False) -> type[PlanMethod]:
    name = strategy + ("-measured" if measured else "")
    cls_name = "Plan_" + name.replace("-", "_")
    return type(cls_name, (PlanMethod,), {"name": name, "strategy": strategy,
                                          "measured": measured})


# -- the registry: one line per method --------------------------------------------------------
METHODS: dict[str, type[Method]] = {
    "full": Full,
    "full-fused": FullFused,
    "torch-checkpoint": TorchCheckpoint,
    "torch-checkpoint-reentrant": _checkpoint_method("torch-checkpoint-reentrant", False, True),
    "torch-checkpoint-fused": _checkpoint_method("torch-checkpoint-fused", True, False),
    "torch-checkpoint-fused-reentrant": _checkpoint_method("torch-checkpoint-fused-reentrant",
                                                           True, True),
    "full-plan": type("Plan_full", (PlanMethod,), {"name": "full-plan", "strategy": "full",
                                                   "uses_budget": False,
                                                   "ignores_budget": True}),
    "chen": _plan_method("chen"),
    "chen-recursive": _plan_method("chen-recursive"),
    "hsm": _plan_method("hsm"),
    "ism": _plan_method("ism"),
    "msm": _plan_method("msm"),
    "chen-measured": _plan_method("chen", measured=True),
    "hsm-measured": _plan_method("hsm", measured=True),
    "msm-measured": _plan_method("msm", measured=True),
    "reversible": Reversible,
}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


OPTION_KEYS = ("memory", "alpha", "beta", "segments", "planner", "block", "tune")


def parse_method_spec(spec: str) -> tuple[str, dict]:
    """``"name:key=value:..."`` -> ``(name, options)``; keys from :data:`OPTION_KEYS`.

    ``segments`` becomes an int, ``planner`` one of ``auto``, ``steps``, ``blocks``,
    ``chains`` and ``block`` an int (the planner and the block length of a measured plan
    method, see ``membptt.plan(planner=..., block=...)``), ``alpha``/``beta`` floats,
    ``memory`` stays a string (units,
    bytes such as ``512MiB``, a percentage such as ``5%``, checked by the planner; or
    ``peak(SPEC)``: the measured peak of the group's method ``SPEC``, resolved by
    :func:`membptt.measure.bench.run_point`). Commas are not allowed (the CLI separates methods
    with them).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a method spec must be a non-empty string, got {spec!r}")
    if "," in spec:
        raise ValueError(f"a method spec cannot contain ',' (it separates methods): {spec!r}")
    name, *parts = [p.strip() for p in _split_top(spec.strip(), ":")]
    get_method(name)
    options: dict = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in OPTION_KEYS or not value:
            raise ValueError(f"bad option {part!r} in method spec {spec!r}: expected key=value "
                             f"with key one of {', '.join(OPTION_KEYS)}")
        try:
            if key == "planner":
                if value not in PLANNER_CHOICES:
                    raise ValueError
                options[key] = value
            elif key == "block":
                options[key] = int(value)
                if options[key] < 1:
                    raise ValueError
            elif key == "tune":
                if value not in ("0", "1"):
                    raise ValueError
                options[key] = value == "1"
            else:
                options[key] = (int(value) if key == "segments" else
                                float(value) if key in ("alpha", "beta") else value)
        except ValueError:
            kind = ("an integer" if key == "segments" else
                    "an integer block length >= 1" if key == "block" else
                    "one of " + ", ".join(PLANNER_CHOICES) if key == "planner"
                    else "0 or 1" if key == "tune" else "a number")
            raise ValueError(f"option {key} in method spec {spec!r} must be {kind}, got "
                             f"{value!r}") from None
    return name, options


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside parentheses (``memory=peak(name:segments=4)``)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def make_method(spec: str, workload: Workload, options: dict | None = None) -> Method:
    """The method of ``spec`` on ``workload``; the spec's own options override ``options``."""
    name, own = parse_method_spec(spec)
    merged = {**(options or {}), **own}
    return get_method(name)(workload, merged)
