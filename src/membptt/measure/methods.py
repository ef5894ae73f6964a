"""Benchmark methods: one way each of running one training iteration of the same workload.

A method is one class and one line in :data:`METHODS`. The interface::

    m = METHODS[name](workload, options)   # options: memory budget, alpha, beta, ...
    m.prepare()       # untimed: plans, probes, builds modules
    loss = m.run()    # one iteration: forward + backward; parameter .grad filled; returns loss
    m.info()          # dict of CSV columns this method knows (forward_ops, budget, predictions)

``run`` does not zero gradients (the harness sets ``.grad = None`` before each iteration).

Methods:

* ``full``: standard BPTT, the stepped ``nn.LSTMCell`` loop under plain autograd (the paper's
  baseline with the same cell as ours);
* ``full-fused``: standard BPTT with the fused ``nn.LSTM`` kernel over the whole sequence, on
  the same weights (the fastest thing a PyTorch user has; keeps more activations);
* ``torch-checkpoint``: ``torch.utils.checkpoint`` (non-reentrant) over ``round(sqrt(T))``
  balanced segments of the stepped loop (what a PyTorch user writes today);
* ``chen``, ``chen-recursive``, ``hsm``, ``ism``, ``msm``: the planning core's strategies run
  by the executor (``membptt.bptt``) on *probed state sizes* and the paper's unit times
  (forward 1, backward 2), i.e. the paper's algorithms on real byte sizes; ``full-plan`` is
  standard BPTT through the executor (it ignores the budget: executor overhead vs ``full``);
* ``msm-measured`` (and ``hsm-measured``, ``chen-measured``): the same strategy planned on the
  *measured* cost model of ``membptt.probe`` (times of fused runs, graph forwards, backwards).
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from .workload import Workload

__all__ = ["Method", "METHODS", "get_method", "Infeasible"]


class Infeasible(Exception):
    """The method cannot run this point as asked (e.g. a budget below its minimum)."""


class Method:
    name: str = ""
    exact: bool = True  # gradients must equal ``full`` up to float reassociation
    uses_budget: bool = False

    def __init__(self, workload: Workload, options: dict | None = None):
        self.w = workload
        self.options = dict(options or {})

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


def _run_steps(step, state, xs, a: int, b: int):
    """Steps a..b-1 (0-based) of the stepped loop with graph; returns state and summed loss."""
    x, y = xs
    total = None
    for t in range(a, b):
        state, loss = step(state, (x[t], y[t]))
        total = loss if total is None else total + loss
    return state, total


class Full(Method):
    name = "full"

    def prepare(self):
        self._step = _Counter(self.w.step)

    def run(self):
        T = self.w.config.seq_len
        _, loss = _run_steps(self._step, self.w.state0, self.w.inputs, 0, T)
        loss.backward()
        return loss.detach()

    def info(self):
        T = self.w.config.seq_len
        return {"forward_ops": T, "backward_ops": T}


class FullFused(Method):
    name = "full-fused"

    def run(self):
        loss = self.w.fused_loss()
        loss.backward()
        return loss.detach()

    def info(self):
        T = self.w.config.seq_len
        return {"forward_ops": T, "backward_ops": T, "params": "fused nn.LSTM kernel"}


def balanced_segments(t: int, k: int) -> list[int]:
    q, r = divmod(t, k)
    return [q] * (k - r) + [q + 1] * r


class TorchCheckpoint(Method):
    """``torch.utils.checkpoint(use_reentrant=False)`` over ``segments`` (default round(sqrt T))."""

    name = "torch-checkpoint"

    def prepare(self):
        T = self.w.config.seq_len
        k = self.options.get("segments") or max(1, round(math.sqrt(T)))
        self.segments = balanced_segments(T, min(int(k), T))
        self._step = _Counter(self.w.step)

    def _segment(self, h, c, x, y):
        (h, c), loss = _run_steps(self._step, (h, c), (x, y), 0, x.shape[0])
        return h, c, loss

    def run(self):
        h, c = self.w.state0
        x, y = self.w.inputs
        total = None
        a = 0
        self._step.calls = 0
        for s in self.segments:
            h, c, loss = checkpoint(self._segment, h, c, x[a:a + s], y[a:a + s],
                                    use_reentrant=False)
            total = loss if total is None else total + loss
            a += s
        total.backward()
        self._calls = self._step.calls
        return total.detach()

    def info(self):
        T = self.w.config.seq_len
        d = {"backward_ops": T, "params": f"segments={len(self.segments)}"}
        # forward evaluations counted during the last run (first sweep + recomputation)
        d["forward_ops"] = getattr(self, "_calls", 2 * T)
        return d


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
    from membptt.execution import working_set_bytes as measured

    key = "_step_working_bytes_chain" if chain else "_step_working_bytes"
    cached = getattr(w, key, None)
    if cached is None:
        cached = measured(w.step_fn, w.state0, w.inputs, chain=chain)
        setattr(w, key, cached)
    return cached


def working_set_bytes(w: Workload, plan=None, *, chains: bool | None = None) -> int:
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

    def prepare(self):
        import membptt
        from membptt.planning.simulate import simulate_ops

        self.report = probe_report(self.w)
        self.probed = self.report.costs
        costs = self.probed
        if not self.measured:
            costs = costs.with_(run_fixed=0.0, run_per_step=1.0, forward_graph=1.0, backward=2.0)
        kw = {k: self.options[k] for k in ("alpha", "beta") if self.options.get(k) is not None}
        memory = None if self.ignores_budget else self.options.get("memory")
        try:
            self.plan = membptt.plan(self.strategy, self.w.config.seq_len, memory,
                                     costs=costs, **kw)
        except ValueError as e:
            if "below the minimum" in str(e):
                raise Infeasible(str(e)) from e
            raise
        # the same plan priced by the probed (measured) costs: predicted seconds
        self.sim_measured = simulate_ops(
            self.plan.ops, self.plan.seq_len, alpha=self.plan.alpha or 1, beta=self.plan.beta,
            count_initial=self.plan.count_initial, costs=self.probed)

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
            "predicted_cost": p.predicted_cost,
            "predicted_time_s": self.sim_measured.predicted_cost,
            "working_set_bytes": working_set_bytes(self.w, self.plan),
            "hidden_bytes": c.hidden_bytes,
            "internal_bytes": c.internal_bytes,
            "beta_bytes": c.beta_bytes,
            "probe_run_fixed_s": c.run_fixed,
            "probe_run_per_step_s": c.run_per_step,
            "probe_forward_graph_s": c.forward_graph,
            "probe_backward_s": c.backward,
        }
        info = {k: v for k, v in p.info.items() if isinstance(v, (int, float, str))}
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
}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]
