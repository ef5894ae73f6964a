"""Spiking networks over many time steps: membptt against what SNN users have (issue 24).

Workload: the registry's ``snn-lif`` step (:mod:`membptt.models.spiking`): rate-coded input
spikes (32 channels), two layers of 64 LIF neurons (surrogate gradient, reset by
subtraction), a leaky-integrator readout over 10 classes and a per-step cross-entropy; batch
8, float32, CPU, one thread; ``T = 1000`` and ``5000`` steps.

Methods, all in one process, interleaved round by round (medians over the rounds after the
first, and the medians of per-round time ratios):

* ``plain``: autograd through the stepped loop (every step's graph kept);
* ``ckpt K``: ``torch.utils.checkpoint`` (non-reentrant) over ``K`` balanced time chunks of
  the stepped loop, the state's tensors in and out of each chunk (what a PyTorch user
  writes), for several ``K``;
* ``memopt L1``: SpikingJelly 2's ``memopt.optimize_memory(..., level=1)`` (selective
  checkpointing of every target module over the whole sequence, binary inputs bit-packed)
  on the same network as SpikingJelly multi-step modules (``base.MemoryModule`` layers whose
  steps are the same :class:`~membptt.models.spiking.SpikingLayer` calls on the same
  parameters, so spikes are bit-identical and gradients comparable; ``--sj-input``). Levels 2-4 need CUDA
  (``memopt levels 2-4 require CUDA memory profiling``) and are not run. Skipped, and said
  so, when SpikingJelly is not installed;
* ``spikingjelly plain``: the same SpikingJelly modules without memopt (what memopt
  starts from: multi-step modules stack their outputs over time);
* ``membptt P%``: ``membptt.plan("msm", T, memory=f"{B}B", costs=membptt.probe(...))`` and
  ``membptt.bptt`` with ``B = P/100 x`` plain's *measured* peak (where the front door refuses
  to plan a budget as too large, ``planner="blocks"``, as its message advises; logged);
* ``membptt @ckpt K`` / ``membptt @memopt``: ``B`` = that method's measured peak, and the
  per-round time ratio to it.

Memory: live tensor bytes (:class:`membptt.execution.memtrack.LiveBytesTracker`) of one
iteration (forward and backward, parameter gradients set to None first), measured once per
method after a warm-up iteration; gradients are compared with plain's (max over parameters
of max |g - g_plain| / max |g_plain|). The probe and planning are not timed. Writes
``results/snn/snn_cpu.csv`` and the printed log ``results/snn/snn_cpu.log`` (each written to
a temporary file, then renamed)::

    .venv/bin/python benchmarks/bench_snn.py --seq-lens 1000,5000 --rounds 5
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.checkpoint import checkpoint

import membptt
from membptt.execution import bptt, plain_bptt
from membptt.execution.memtrack import LiveBytesTracker
from membptt.models.spiking import SpikingNetwork, rate_coded_task

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ["seq_len", "method", "kind", "param", "budget_bytes", "peak_bytes", "peak_vs_plain",
          "within_budget", "time_median_s", "ratio_vs_plain", "ref", "ratio_vs_ref",
          "grad_max_rel", "forwards_per_step", "planner", "block", "rounds", "threads",
          "batch", "input_size", "hidden", "classes", "dtype", "torch", "spikingjelly",
          "sj_input", "command"]


# -- the methods -----------------------------------------------------------------------------

def ckpt_iteration(model, s0, x, y, K):
    """``torch.utils.checkpoint`` over ``K`` balanced chunks of the stepped loop."""
    T = x.shape[0]
    bounds = [round(i * T / K) for i in range(K + 1)]
    leaves, spec = tree_flatten(s0)
    n = len(leaves)

    def chunk(*args):
        state = tree_unflatten(list(args[:n]), spec)
        xs, ys = args[n], args[n + 1]
        total = None
        for t in range(xs.shape[0]):
            state, loss = model(state, (xs[t], ys[t]))
            total = loss if total is None else total + loss
        return (*tree_flatten(state)[0], total)

    total = None
    for a, b in zip(bounds, bounds[1:]):
        out = checkpoint(chunk, *leaves, x[a:b], y[a:b], use_reentrant=False)
        leaves, loss = list(out[:-1]), out[-1]
        total = loss if total is None else total + loss
    total.backward()


def spikingjelly_net(model, sj_input="unbind"):
    """The same network as SpikingJelly multi-step modules (``step_mode="m"``, time on dim 0),
    sharing ``model``'s parameter tensors. ``None`` when SpikingJelly is not installed.

    ``sj_input``: how a layer takes its input sequence apart: ``"unbind"`` (one
    ``x_seq.unbind(0)``; its backward stacks the step gradients once) or ``"index"``
    (``x_seq[t]`` at every step, as ``MemoryModule.multi_step_functional_forward``'s default
    does; each step's backward then materialises a zero gradient of the whole sequence, so
    backward time grows as T^2 for a layer whose input needs a gradient)."""
    steps = (lambda xs: xs.unbind(0)) if sj_input == "unbind" else (
        lambda xs: [xs[t] for t in range(xs.shape[0])])
    try:
        from spikingjelly.activation_based import base, functional
    except ImportError:
        return None, None

    class Layer(base.MemoryModule):
        """A SpikingLayer over a whole sequence; its membrane is a SpikingJelly memory."""

        def __init__(self, layer):
            super().__init__()
            self.layer = layer
            self.register_memory("v", None)
            self.step_mode = "m"

        def multi_step_forward(self, x_seq):
            v = self.v if self.v is not None else x_seq.new_zeros(x_seq.shape[1],
                                                                 self.layer.n_out)
            out = []
            for x_t in steps(x_seq):
                s, v, _ = self.layer(x_t, v)
                out.append(s)
            self.v = v
            return torch.stack(out)

    class Readout(base.MemoryModule):
        """The leaky-integrator readout over a whole sequence."""

        def __init__(self, linear, kappa):
            super().__init__()
            self.linear, self.kappa = linear, kappa
            self.register_memory("u", None)
            self.step_mode = "m"

        def multi_step_forward(self, s_seq):
            u = self.u if self.u is not None else s_seq.new_zeros(s_seq.shape[1],
                                                                 self.linear.out_features)
            out = []
            for s_t in steps(s_seq):
                u = self.kappa * u + self.linear(s_t)
                out.append(u)
            self.u = u
            return torch.stack(out)

    net = torch.nn.Sequential(*[Layer(la) for la in model.layers],
                              Readout(model.readout, model.kappa))
    return net, (Layer, Readout, functional)


def plan_msm(T, budget, costs, log, name):
    """``membptt.plan("msm", T, f"{budget}B", costs=costs)``; when the front door refuses it
    as too large to plan (the step DP's work or table limit: tiny states make large budgets
    thousands of units at T = 5000), the block planner, as its message advises."""
    try:
        return membptt.plan("msm", T, f"{budget}B", costs=costs)
    except membptt.PlanTooLarge as e:
        log(f"# {name}: planner='auto' refused {budget} B ({str(e).split(':')[0]}); "
            "planner='blocks' as the message advises")
        return membptt.plan("msm", T, f"{budget}B", costs=costs, planner="blocks")


def sj_iteration(net, reset, x, y):
    reset(net)
    u = net(x)  # (T, B, classes)
    torch.nn.functional.cross_entropy(u.flatten(0, 1), y.flatten(), reduction="sum").backward()


# -- measurement -----------------------------------------------------------------------------

def grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


def max_rel(a, b):
    return max(((u - v).abs().max() / v.abs().max().clamp_min(1e-30)).item()
               for u, v in zip(a, b))


def peak_of(model, fn):
    """Live-bytes peak of one iteration (after a warm-up one) and its gradients."""
    model.zero_grad(set_to_none=True)
    fn()
    model.zero_grad(set_to_none=True)
    gc.collect()
    with LiveBytesTracker() as tr:
        fn()
    return tr.peak_bytes, grads(model)


def versions():
    """SpikingJelly's installed version, or "" when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spikingjelly")
    except PackageNotFoundError:
        return ""


def run_T(T, args, log, command):
    torch.manual_seed(args.seed)
    model = SpikingNetwork(args.input_size, args.hidden, args.classes, neuron=args.neuron)
    x, y = rate_coded_task(T, args.batch, args.input_size, args.classes, seed=args.seed)
    s0 = model.initial_state(args.batch)
    runs, peaks, gerr, rows = {}, {}, {}, {}

    def plain():
        loss, _ = plain_bptt(model, s0, (x, y))
        loss.backward()

    runs["plain"] = plain
    peaks["plain"], g_plain = peak_of(model, plain)
    gerr["plain"] = 0.0
    rows["plain"] = {"kind": "plain", "param": ""}
    for K in args.chunks:
        name = f"ckpt {K}"
        runs[name] = lambda K=K: ckpt_iteration(model, s0, x, y, K)
        peaks[name], g = peak_of(model, runs[name])
        gerr[name] = max_rel(g, g_plain)
        rows[name] = {"kind": "torch.utils.checkpoint", "param": f"chunks={K}"}
    net, sj = spikingjelly_net(model, args.sj_input)
    if net is None:
        log("# SpikingJelly is not installed: memopt not run (pip install spikingjelly==2.0.0)")
    else:
        from spikingjelly.activation_based.memopt import optimize_memory

        Layer, Readout, functional = sj
        plain_net, _ = spikingjelly_net(model, args.sj_input)  # the same, without memopt
        name = "spikingjelly plain"
        runs[name] = lambda: sj_iteration(plain_net, functional.reset_net, x, y)
        peaks[name], g = peak_of(model, runs[name])
        gerr[name] = max_rel(g, g_plain)
        rows[name] = {"kind": "spikingjelly multi-step, no memopt", "param": ""}
        optimize_memory(net, (Layer, Readout), lambda m: (functional.reset_net(m), m(x))[1],
                        level=1)
        name = "memopt L1"
        runs[name] = lambda: sj_iteration(net, functional.reset_net, x, y)
        peaks[name], g = peak_of(model, runs[name])
        gerr[name] = max_rel(g, g_plain)
        rows[name] = {"kind": "spikingjelly memopt", "param": "level=1"}
    t0 = time.perf_counter()
    costs = membptt.probe(model, s0, (x, y))
    log(f"# T={T}: probe {time.perf_counter() - t0:.1f} s (not timed)")
    budgets = {f"membptt {p:g}%": (int(p / 100 * peaks["plain"]), None) for p in args.pcts}
    ck = [f"ckpt {K}" for K in args.chunks]
    best = min(ck, key=lambda k: peaks[k]) if ck else None
    for ref in ck + (["memopt L1"] if "memopt L1" in peaks else []):
        budgets[f"membptt @{ref}"] = (peaks[ref], ref)
    plans = {}
    for name, (b, ref) in budgets.items():
        t0 = time.perf_counter()
        try:
            p = plan_msm(T, b, costs, log, name)
        except (membptt.BudgetTooSmall, membptt.PlanTooLarge) as e:
            log(f"# {name}: {b} B refused: {e}")
            continue
        log(f"# {name}: planned in {time.perf_counter() - t0:.1f} s (not timed): "
            f"planner {p.planner}, block {p.block or 1}, "
            f"{p.forward_ops / T:.3f} forwards per step")
        plans[name] = p
        runs[name] = lambda p=p: bptt(model, s0, (x, y), p).backward()
        peaks[name], g = peak_of(model, runs[name])
        gerr[name] = max_rel(g, g_plain)
        rows[name] = {"kind": "membptt msm", "param": f"memory={b}B", "budget_bytes": b,
                      "within_budget": peaks[name] <= b, "ref": ref or "",
                      "forwards_per_step": round(p.forward_ops / T, 3),
                      "planner": p.planner, "block": p.block or 1}
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    kept = {k: (v[1:] if len(v) > 1 else v) for k, v in times.items()}

    def ratio(a, b):
        return statistics.median(u / v for u, v in zip(kept[a], kept[b]))

    out = []
    for name in runs:
        r = rows[name]
        ref = r.get("ref") or ""
        out.append({"seq_len": T, "method": name, **r,
                    "peak_bytes": peaks[name],
                    "peak_vs_plain": round(peaks[name] / peaks["plain"], 4),
                    "time_median_s": round(statistics.median(kept[name]), 4),
                    "ratio_vs_plain": round(ratio(name, "plain"), 3),
                    "ratio_vs_ref": round(ratio(name, ref), 3) if ref else "",
                    "grad_max_rel": f"{gerr[name]:.2e}", "rounds": args.rounds,
                    "threads": args.threads, "batch": args.batch,
                    "input_size": args.input_size, "hidden": args.hidden,
                    "classes": args.classes, "dtype": "float32",
                    "torch": torch.__version__, "spikingjelly": versions(),
                    "sj_input": args.sj_input if "memopt L1" in runs else "",
                    "command": command})
    log(f"\nT={T}: {args.neuron} 2 x {args.hidden}, input {args.input_size}, batch "
        f"{args.batch}, float32, {args.threads} thread(s), {args.rounds} rounds (first "
        f"dropped); SpikingJelly input: {args.sj_input}; best checkpoint by peak: {best}")
    log(f"{'method':20s} {'peak MiB':>8s} {'x plain':>7s} {'budget':>8s} {'in':>3s} "
        f"{'median s':>8s} {'t/plain':>7s} {'t/ref':>6s} {'fwd/step':>8s} {'grad rel':>9s}")
    for r in out:
        b = r.get("budget_bytes")
        inside = {True: "yes", False: "NO"}.get(r.get("within_budget"), "")
        log(f"{r['method']:20s} {r['peak_bytes'] / 2**20:8.2f} {r['peak_vs_plain']:7.3f} "
            f"{(f'{b / 2**20:.2f}' if b else ''):>8s} {inside:>3s} {r['time_median_s']:8.3f} "
            f"{r['ratio_vs_plain']:7.3f} {str(r['ratio_vs_ref']):>6s} "
            f"{str(r.get('forwards_per_step', '')):>8s} {r['grad_max_rel']:>9s}")
    log("per round (s):")
    for name, v in times.items():
        log(f"  {name:20s} {[round(t, 3) for t in v]}")
    return out


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq-lens", default="1000,5000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunks", default="10,30,100",
                    help="time-chunk counts of the torch.utils.checkpoint baselines")
    ap.add_argument("--pcts", default="5,10,20",
                    help="membptt budgets in %% of plain BPTT's measured peak")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--neuron", choices=("lif", "alif"), default="lif")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sj-input", choices=("unbind", "index"), default="unbind",
                    help="how the SpikingJelly layers take their input sequence apart "
                    "(index: x_seq[t] per step, MemoryModule's default; backward ~T^2)")
    ap.add_argument("--out", default=str(ROOT / "results" / "snn" / "snn_cpu.csv"))
    ap.add_argument("--log", default=None, help="default: the --out path with .log")
    args = ap.parse_args(argv)
    try:
        seq_lens = [int(v) for v in args.seq_lens.split(",") if v]
        args.chunks = [int(v) for v in args.chunks.split(",") if v]
        args.pcts = [float(v) for v in args.pcts.split(",") if v]
    except ValueError as e:
        ap.error(f"--seq-lens, --chunks and --pcts are comma-separated numbers: {e}")
    if not seq_lens or min(seq_lens) < 3:
        ap.error(f"--seq-lens needs lengths >= 3, got {args.seq_lens!r}")
    if any(k < 1 or k > min(seq_lens) for k in args.chunks):
        ap.error(f"--chunks must be in 1..{min(seq_lens)}, got {args.chunks}")
    if any(not 0 < p <= 100 for p in args.pcts):
        ap.error(f"--pcts must be in (0, 100], got {args.pcts}")
    if args.rounds < 2:
        ap.error(f"--rounds must be >= 2 (the first round is dropped), got {args.rounds}")
    torch.set_num_threads(args.threads)
    command = ".venv/bin/python benchmarks/bench_snn.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    lines = []

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    log(f"# {command.strip()}")
    log(f"# torch {torch.__version__}, spikingjelly {versions() or 'not installed'}, python "
        f"{platform.python_version()}, {platform.machine()}")
    rows = []
    for T in seq_lens:
        rows += run_T(T, args, log, command.strip())
    out = Path(args.out)
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="raise")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in FIELDS})
    write_atomic(out, buf.getvalue())
    write_atomic(Path(args.log) if args.log else out.with_suffix(".log"), "\n".join(lines) + "\n")
    print(f"# wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
