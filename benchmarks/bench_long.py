"""Long sequences under a fixed byte budget: how membptt's time per step grows with T.

At a fixed budget (default 32 MiB of live tensor bytes beyond inputs and parameters; LSTM 256,
256 inputs, 256 classes, batch 16, float32, this CPU) and for every ``T`` of ``--lengths``,
one training iteration of

* membptt: ``msm-measured:memory=BUDGET`` (probed costs; the front door picks the planner),
* the best one-level ``torch.utils.checkpoint`` over ``K`` fused segments that fits the same
  budget: ``K`` is chosen by the probed prices (``K - 1`` stored segment inputs plus one
  ``T/K``-step segment's lone working set, the replay of :func:`membptt.planning.predict` on
  the checkpoint's own schedule), then its peak is measured; when none is predicted to fit,
  or the chosen one measures above the budget, the row says so,

with fused full BPTT at ``T = --reference`` (default 1,000) timed in the same process as the
per-step reference (``--rounds`` interleaved rounds of it and of membptt at that ``T``; at
every ``T`` the median of ``--iterations`` timed iterations, default one, after an untimed one
that measures the peak).
Printed per row: time per step and its ratio to the reference's, measured peak, planning time,
forward calls per step, the planner's choice and the DP's work. The rows go to ``--out``
(CSV, written atomically); ``--plot`` draws time per step against T (log axis) with the
paper's bound on BPTT-HSM's cost per step at the same number of slots (``C_HSM(T, m) / T``
forwards per step, ``m`` the budget's hidden-state slots), scaled to seconds by the
reference's per-step time of a forward.

    .venv/bin/python benchmarks/bench_long.py --iterations 3           # the issue's sizes
    .venv/bin/python benchmarks/bench_long.py --lengths 1000,3000 --batch 4 --budget 8MiB
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import membptt
from membptt.measure.memory import tracked_peak
from membptt.measure.methods import make_method
from membptt.measure.results import atomic_write_text
from membptt.measure.timing import time_interleaved
from membptt.measure.workload import WorkloadConfig, make_workload
from membptt.planning import Backward, Drop, Forward, Prices, dp, predict
from membptt.planning.budget import parse_memory
from membptt.planning.strategies import _balanced


def checkpoint_ops(T: int, K: int):
    """``torch.utils.checkpoint`` over ``K`` balanced fused segments as a plan: a graph-free
    first sweep storing the segments' inputs, then each segment recomputed with graph in one
    call and backpropagated, the last first. Returns ``(ops, segment_ends)``."""
    bounds = [0]
    for s in _balanced(T, K):
        bounds.append(bounds[-1] + s)
    ops = []
    for j in range(1, K):
        ops += [Forward(i) for i in range(bounds[j - 1] + 1, bounds[j])]
        ops.append(Forward(bounds[j], "hidden"))
    for j in range(K, 0, -1):
        a, b = bounds[j - 1] + 1, bounds[j]
        ops += [Forward(i, "internal") for i in range(a, b)] + [Forward(b, "core")]
        ops += [Backward(i) for i in range(b, a - 1, -1)]
        ops += [Drop(i, "internal") for i in range(b - 1, a - 1, -1)]
        if j > 1:
            ops.append(Drop(bounds[j - 1], "hidden"))
    return ops, tuple(bounds[1:])


def best_checkpoint(T: int, costs, budget: int, max_k: int = 4096):
    """(K, predicted seconds, predicted peak) of the fastest one-level fused checkpoint whose
    predicted peak fits ``budget``, or None.

    Every ``K`` up to ``min(T, max_k)`` is priced in closed form from the same prices the
    replay uses (segment ``j`` of ``L_j`` steps: a graph-free run of ``L_j`` before it in the
    first sweep unless it is the last, one fused call with graph and its backward; while it
    is the core, ``j - 1`` stored inputs and its lone working set), and the chosen ``K`` is
    replayed by :func:`membptt.planning.predict` on its own schedule to confirm both numbers.
    """
    prices = Prices(costs, None, None)
    best = None
    for K in range(1, min(T, max_k) + 1):
        if (K - 1) * costs.hidden_bytes > budget:
            break
        lens = _balanced(T, K)
        peak = max((j * costs.hidden_bytes + prices.core(L) for j, L in enumerate(lens)))
        if peak > budget:
            continue
        secs = (sum(prices.run(L) for L in lens[:-1])
                + sum(prices.forward(L) + prices.backward(L) for L in lens))
        if best is None or secs < best[1]:
            best = (K, secs, peak)
    if best is None:
        return None
    ops, ends = checkpoint_ops(T, best[0])
    p = predict(ops, T, costs, segment_ends=ends)
    assert math.isclose(p.total_cost, best[1], rel_tol=1e-9) and p.peak_bytes == best[2], (
        p, best)
    return best


def _timed(fn, before, n: int) -> list[float]:
    """Seconds of ``n`` iterations, one by one (``before`` untimed before each)."""
    out = []
    for _ in range(n):
        before()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="1000,3000,10000,30000,100000")
    ap.add_argument("--budget", default="32MiB")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reference", type=int, default=1000, help="T of fused full BPTT")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds at --reference")
    ap.add_argument("--iterations", type=int, default=1,
                    help="timed iterations at every T (the median is reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-checkpoint", action="store_true", help="membptt only")
    ap.add_argument("--out", type=Path, default=Path("results/long/long_cpu.csv"))
    ap.add_argument("--plot", type=Path, default=None, help="PNG of time per step against T")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    kind, budget = parse_memory(args.budget)
    if kind != "bytes":
        ap.error(f"--budget must be bytes (e.g. 32MiB), got {args.budget!r}")
    budget = int(budget)
    spec = f"msm-measured:memory={budget}B"
    t_start = time.time()
    rows = []

    def workload(T):
        return make_workload(WorkloadConfig(model="lstm", seq_len=T, hidden=args.hidden,
                                            batch=args.batch, input_size=args.input_size,
                                            classes=args.classes))

    # the reference: fused full BPTT and membptt at T = reference, interleaved
    w = workload(args.reference)
    ref = make_method("full-fused", w)
    mem = make_method(spec, w)
    ref.prepare()
    mem.prepare()
    res = time_interleaved({"full-fused": ref.run, "membptt": mem.run}, repeats=args.rounds,
                           warmup=1, before=w.zero_grad)
    ref_s = statistics.median(res["full-fused"].samples) / args.reference
    per_round = [a / b for a, b in zip(res["membptt"].samples, res["full-fused"].samples)]
    print(f"# reference: fused full BPTT at T={args.reference}: {ref_s * 1e3:.4f} ms/step "
          f"(median of {args.rounds}); membptt there {statistics.median(per_round):.3f}x "
          f"(per round {' '.join(f'{r:.3f}' for r in per_round)})")
    w.zero_grad()
    ref_peak, _, _ = tracked_peak(ref.run)
    rows.append({"method": "full-fused", "seq_len": args.reference,
                 "time_s": statistics.median(res["full-fused"].samples),
                 "per_step_ms": ref_s * 1e3, "ratio_to_reference": 1.0,
                 "peak_bytes": ref_peak, "budget_bytes": None, "note": "reference"})
    del ref, mem, w
    gc.collect()

    print(f"{'T':>7} {'method':<28} {'ms/step':>8} {'x ref':>6} {'peak MiB':>9} "
          f"{'fwd/step':>8} {'plan s':>7}  notes")
    for T in lengths:
        w = workload(T)
        m = make_method(spec, w)
        m.prepare()
        t0 = time.perf_counter()
        p = membptt.plan("msm", T, f"{budget}B", costs=m.probed)
        plan_s = time.perf_counter() - t0
        assert p.ops == m.plan.ops
        w.zero_grad()
        peak, _, _ = tracked_peak(m.run)
        samples = _timed(m.run, w.zero_grad, args.iterations)
        secs = statistics.median(samples)
        notes = f"planner={p.planner}" + (f" k={p.block}" if p.block else "") + "; " + "; ".join(
            f"{r['planner']}: " + (f"{r['predicted_cost']:.3g} s" if "predicted_cost" in r
                                   else ("refused" if "refused" in r else "skipped"))
            for r in p.info["planners"])
        row = {"method": "membptt", "seq_len": T, "time_s": secs,
               "time_samples_s": " ".join(f"{x:.6g}" for x in samples),
               "per_step_ms": secs / T * 1e3, "ratio_to_reference": secs / T / ref_s,
               "peak_bytes": peak, "budget_bytes": budget, "plan_s": plan_s,
               "forwards_per_step": p.forward_ops / T, "planner": p.planner,
               "block": p.block, "predicted_s": p.predicted_cost, "note": notes}
        rows.append(row)
        ok = "" if peak <= budget else " OVER BUDGET"
        print(f"{T:>7} {'membptt (' + p.planner + ')':<28} {row['per_step_ms']:>8.4f} "
              f"{row['ratio_to_reference']:>6.3f} {peak / 2**20:>9.2f} "
              f"{row['forwards_per_step']:>8.3f} {plan_s:>7.2f}  {notes}{ok}", flush=True)
        del m
        gc.collect()
        if not args.no_checkpoint:
            costs = make_method(spec, w)
            costs.prepare()
            best = best_checkpoint(T, costs.probed, budget)
            del costs
            if best is None:
                rows.append({"method": "checkpoint", "seq_len": T, "budget_bytes": budget,
                             "note": "no K fits the budget (predicted)"})
                print(f"{T:>7} {'checkpoint':<28} no K fits {budget / 2**20:.2f} MiB "
                      "(predicted by the probed prices)", flush=True)
            else:
                K = best[0]
                c = make_method(f"torch-checkpoint-fused-reentrant:segments={K}", w)
                c.prepare()
                w.zero_grad()
                cpeak, _, _ = tracked_peak(c.run)
                csamples = _timed(c.run, w.zero_grad, args.iterations)
                csecs = statistics.median(csamples)
                fits = cpeak <= budget
                rows.append({"method": f"checkpoint K={K}", "seq_len": T, "time_s": csecs,
                             "time_samples_s": " ".join(f"{x:.6g}" for x in csamples),
                             "per_step_ms": csecs / T * 1e3,
                             "ratio_to_reference": csecs / T / ref_s, "peak_bytes": cpeak,
                             "budget_bytes": budget, "forwards_per_step": 2 - 1 / K,
                             "predicted_s": best[1],
                             "note": "fits" if fits else "measured above the budget"})
                print(f"{T:>7} {f'checkpoint K={K}':<28} {csecs / T * 1e3:>8.4f} "
                      f"{csecs / T / ref_s:>6.3f} {cpeak / 2**20:>9.2f} {2 - 1 / K:>8.3f} "
                      f"{'':>7}  {'fits' if fits else 'ABOVE the budget'}", flush=True)
                del c
        del w
        gc.collect()
    for r in rows:
        r.update(host=platform.node(), threads=args.threads, batch=args.batch,
                 hidden=args.hidden, torch=torch.__version__,
                 started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
                 command=" ".join(["bench_long.py"] + (argv or sys.argv[1:])))
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=keys)
    wr.writeheader()
    wr.writerows(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, buf.getvalue())
    print(f"# wrote {args.out} in {time.time() - t_start:.0f} s")
    if args.plot:
        plot(args.out, args.plot, budget)
    return 0


def plot(csv_path: Path, png: Path, budget: int) -> None:
    """Time per step against T (log axis): membptt, the checkpoint where it fits, and the
    paper's bound on BPTT-HSM's cost per step at the budget's slots, in seconds of the
    reference's forward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    d = pd.read_csv(csv_path)
    ref = d[d.method == "full-fused"].iloc[0]
    fig, ax = plt.subplots(figsize=(6, 4))
    mem = d[d.method == "membptt"].sort_values("seq_len")
    ax.plot(mem.seq_len, mem.per_step_ms, "o-", label="membptt (planner's choice)")
    ck = d[d.method.str.startswith("checkpoint") & d.per_step_ms.notna()]
    ck = ck[ck.note == "fits"].sort_values("seq_len")
    if len(ck):
        ax.plot(ck.seq_len, ck.per_step_ms, "s--", label="one-level fused checkpoint (fits)")
    ax.axhline(ref.per_step_ms, color="gray", lw=1,
               label=f"fused full BPTT at T={int(ref.seq_len)}")
    hb = 2 * int(ref.hidden) * int(ref.batch) * 4  # an LSTM's (h, c) in float32
    slots = budget // hb + 1
    Ts = sorted(mem.seq_len)
    # the paper's HSM cost per step (forwards per step) at these slots, on the scale of the
    # reference: (C/T + 2) / 3 of a fused full step (forward = 1, backward = 2 units)
    bound = [(dp.c_hsm_closed(int(T), slots) / T + 2) / 3 * ref.per_step_ms for T in Ts]
    ax.plot(Ts, bound, ":", color="k", label=f"BPTT-HSM bound, {slots} slots (paper)")
    ax.set_xscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("ms per step (one iteration)")
    ax.set_title(f"fixed budget {budget / 2**20:.0f} MiB, LSTM {int(ref.hidden)}, "
                 f"batch {int(ref.batch)}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    print(f"# drew {png}")


if __name__ == "__main__":
    sys.exit(main())
