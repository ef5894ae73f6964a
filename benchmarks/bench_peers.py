"""membptt against what a PyTorch user has, in one process, interleaved (issue 9).

One comparison group (``membptt.measure.bench.run_point``: every method prepared, gradient-
checked against plain BPTT, its peak of live tensor bytes measured, then timed round by round,
methods interleaved), at the issue's sizes by default (T = 1000, LSTM 256, 256 inputs, 256
classes, batch 64, float32):

* ``full``: plain BPTT over the stepped ``nn.LSTMCell`` (the group's baseline);
* ``full-fused``: full BPTT with one fused ``nn.LSTM`` call over the sequence;
* ``torch.utils.checkpoint`` over ``K`` fused ``nn.LSTM`` segments, both reentrant modes, for
  every ``K`` of ``--ks`` (the fused checkpoint *front*), and over ``K = 32`` stepped segments;
* membptt MSM planned on the probed fused-segment costs (``msm-measured``: fused blocks, the
  block length chosen by the planner) at budgets of ``--budgets`` percent of stepped BPTT's
  bytes, at each front point's measured peak (``memory=peak(...)``) and at half the front's
  smallest measured peak (below the front); ``--membptt msm-measured,hsm-measured:planner=chains``
  adds chain planning (:mod:`membptt.planning.chains`) at the same budgets, in the same group,
  and ``--membptt msm-measured,msm-measured:tune=1`` the same plans timed among candidates
  (``membptt.tune``).

Interleaving cancels machine drift but shares the allocator's history between methods: on a
CPU with glibc's defaults a plan's time then depends on what ran before it, and
``benchmarks/bench_steady.py`` (each method in its own process, as a training loop runs it)
can rank plans differently (``docs/executor-speed.md``).

Then it checks the issue's four claims from the in-group numbers, prints a table (medians,
ratios of medians, medians of per-round ratios, measured peaks), writes the rows as a CSV and
draws the memory-time fronts from that CSV::

    .venv/bin/python benchmarks/bench_peers.py                         # the issue's sizes
    .venv/bin/python benchmarks/bench_peers.py --seq-len 200 --rounds 3  # quicker
    .venv/bin/python benchmarks/bench_peers.py --device cuda --out results/peers/peers_h100.csv
    .venv/bin/python benchmarks/bench_peers.py --preset launch   # launch-bound sizes, 1 thread

Presets (issue 18): ``paper`` (the default: T = 1000, LSTM 256, 256 inputs and classes, batch
64, 2 threads) is compute-bound on this CPU; ``launch`` (T = 1000, input 16, LSTM 16, 16
classes, batch 2, 1 thread) is launch-bound, where a call's fixed cost sets the time, as on a
GPU at the paper's sizes; ``charlm`` (T = 200, embedding 96 -> 32, LSTM 128, batch 16, 1
thread, K = 7 and 14) a character-level language model's. Explicit options override a preset's
values. For every ``K`` the group
also runs ``own K``: membptt HSM on blocks of exactly ``ceil(T / K)`` steps with memory to
spare (four times the checkpoint's peak), which is the checkpoint's own schedule (``K`` stored
boundaries, each segment recomputed once with graph): it measures the executor's overhead on
the same schedule.

Ratios of two methods are taken inside this one group only; ``ratio_of`` divides their times
round by round (the same interleaved sweep) and takes the median.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from membptt.measure.bench import BenchConfig, run_point
from membptt.measure.memory import tracked_peak
from membptt.measure.methods import make_method
from membptt.measure.workload import WorkloadConfig, make_workload

PRESETS = {
    "paper": dict(seq_len=1000, hidden=256, input_size=256, classes=256, batch=64, threads=2),
    "launch": dict(seq_len=1000, hidden=16, input_size=16, classes=16, batch=2, threads=1),
    # a character-level LM's sizes (embedding 96 -> 32, LSTM 128, T = 200, batch 16)
    "charlm": dict(seq_len=200, hidden=128, input_size=32, classes=96, batch=16, threads=1,
                   ks=[7, 14]),
}
DEFAULT_KS = [4, 8, 16, 32, 64, 128]
FRONT = "torch-checkpoint-fused-reentrant"
FRONT_NR = "torch-checkpoint-fused"


def _samples(row) -> list[float]:
    return [float(s) for s in str(row.get("time_samples_s", "")).split()]


def ratio_of(a: dict, b: dict) -> tuple[float, float]:
    """(ratio of medians, median of per-round ratios) of rows ``a`` over ``b`` (one group)."""
    sa, sb = _samples(a), _samples(b)
    if not sa or len(sa) != len(sb):
        return math.nan, math.nan
    return statistics.median(sa) / statistics.median(sb), statistics.median(
        x / y for x, y in zip(sa, sb))


def front_peaks(wc: WorkloadConfig, ks, threads) -> dict:
    """Measured peak of live bytes of one iteration of each fused checkpoint point."""
    torch.set_num_threads(threads)
    w = make_workload(wc)
    out = {}
    for mode in (FRONT, FRONT_NR):
        for k in ks:
            m = make_method(f"{mode}:segments={k}", w)
            m.prepare()
            w.zero_grad()
            out[(mode, k)], _, _ = tracked_peak(m.run)
            w.zero_grad()
    return out


def build_methods(args, peaks: dict) -> tuple[list[str], dict]:
    """Method specs of the group and the role of each membptt point: ``(role, value, base)``
    with ``base`` one of ``--membptt`` (the method and its options without the budget)."""
    specs = ["full", "full-fused"]
    for k in args.ks:
        specs += [f"{FRONT}:segments={k}", f"{FRONT_NR}:segments={k}"]
    specs += ["torch-checkpoint-reentrant:segments=32", "torch-checkpoint:segments=32"]
    roles = {}
    for k in args.ks:  # the checkpoint's own schedule, run by the executor
        b = 4 * max(peaks[(FRONT, k)], peaks[(FRONT_NR, k)])
        s = f"hsm-measured:planner=blocks:block={-(-args.seq_len // k)}:memory={b}B"
        specs.append(s)
        roles[s] = ("own", k, "own")
    below = min(peaks.values()) // 2
    for base in args.membptt:
        for pct in args.budgets:
            s = f"{base}:memory={pct:g}%"
            specs.append(s)
            roles[s] = ("budget", pct, base)
        for k in args.ks:
            # the smaller of the two modes' peaks: membptt must fit under both
            b = min(peaks[(FRONT, k)], peaks[(FRONT_NR, k)])
            s = f"{base}:memory={b}B"
            if s not in specs:
                specs.append(s)
            roles[s] = ("front", k, base)
        s = f"{base}:memory={below}B"
        specs.append(s)
        roles[s] = ("below", below, base)
    return specs, roles


def verdicts(rows: dict, roles: dict, args, plain_peak: int) -> list[str]:
    out = []
    front = _front(rows, args)
    for spec, (role, k, _) in roles.items():
        if role != "own" or front[k] is None:
            continue
        r = rows[spec]
        if r["status"] != "ok":
            out.append(f"own K={k}: {r['status']}: {r.get('message', '')[:200]}")
            continue
        rm, rr = ratio_of(r, front[k])
        out.append(f"own K={k} (HSM on blocks of {r.get('block')} steps, the checkpoint's "
                   f"schedule): time {rm:.3f} x the checkpoint (per-round {rr:.3f}): "
                   f"{'MET' if rr <= 1.02 else 'NOT MET'} (target <= 1.02)")
    over = [(s, rows[s]["peak_bytes"], _budget(rows[s])) for s in roles
            if rows[s]["status"] == "ok" and rows[s]["peak_bytes"] > _budget(rows[s])]
    n_ok = sum(1 for s in roles if rows[s]["status"] == "ok")
    out.append(f"budgets: {n_ok - len(over)} of {n_ok} membptt points measured inside their "
               "budget" + ("" if not over else "; OVER: " + ", ".join(
                   f"{s} ({p:,} > {b:,.0f} B)" for s, p, b in over)))
    for base in args.membptt:
        out.append(f"membptt as {base}:")
        out += ["  " + line for line in _verdicts(
            rows, {s: r[:2] for s, r in roles.items() if r[2] == base}, args, plain_peak)]
    return out


def _front(rows: dict, args) -> dict:
    """The faster of the two checkpoint modes at each K (None when neither ran)."""
    front = {}
    for k in args.ks:
        a, b = rows[f"{FRONT}:segments={k}"], rows[f"{FRONT_NR}:segments={k}"]
        ok = [r for r in (a, b) if r["status"] == "ok"]
        front[k] = min(ok, key=lambda r: statistics.median(_samples(r))) if ok else None
    return front


def _verdicts(rows: dict, roles: dict, args, plain_peak: int) -> list[str]:
    out = []
    ff = rows["full-fused"]
    front = _front(rows, args)
    # 1. at each front point's peak, membptt is no slower than that point
    for spec, (role, v) in roles.items():
        if role != "front" or front[v] is None:
            continue
        r = rows[spec]
        if r["status"] != "ok":
            out.append(f"front K={v}: membptt {r['status']}: {r.get('message', '')[:200]}")
            continue
        rm, rr = ratio_of(r, front[v])
        ok = rr <= 1.0 and r["peak_bytes"] <= front[v]["peak_bytes"] * 1.0001
        out.append(f"front K={v}: membptt/ckpt time {rm:.3f} (per-round {rr:.3f}), peak "
                   f"{r['peak_bytes'] / 2**20:.2f} vs {front[v]['peak_bytes'] / 2**20:.2f} MiB, "
                   f"block {r.get('block')}: {'MET' if ok else 'NOT MET'}")
    # 2. more memory never makes membptt slower than the front's fastest point
    fastest = min((r for r in front.values() if r is not None),
                  key=lambda r: statistics.median(_samples(r)))
    above = [(spec, v) for spec, (role, v) in roles.items() if rows[spec]["status"] == "ok"
             and rows[spec]["peak_bytes"] >= 0 and _budget(rows[spec]) >= fastest["peak_bytes"]]
    worst = max((ratio_of(rows[s], fastest)[0] for s, _ in above), default=math.nan)
    verdict = "n/a" if not above else "MET" if worst <= 1.0 else "NOT MET"
    out.append(f"monotone: {len(above)} membptt points budgeted above the fastest front point "
               f"({fastest['label']}, {fastest['peak_bytes'] / 2**20:.2f} MiB); worst time "
               f"ratio to it {worst:.3f}: {verdict}")
    # 3. the headline: 5 % of stepped BPTT's bytes at <= 1.15x fused full BPTT (issue 18; the
    #    best plan of the paper's kind is 1.13x on this CPU, docs/executor-speed.md)
    s5 = next((s for s, (role, v) in roles.items() if role == "budget" and v == 5), None)
    if s5 and rows[s5]["status"] == "ok":
        r = rows[s5]
        rm, rr = ratio_of(r, ff)
        frac = r["peak_bytes"] / plain_peak
        ok = frac <= 0.05 and rr <= 1.15
        out.append(f"5%: peak {frac:.4f} of stepped BPTT ({r['peak_bytes'] / ff['peak_bytes']:.4f}"
                   f" of fused), time {rm:.3f} x fused full (per-round {rr:.3f}), block "
                   f"{r.get('block')}: {'MET' if ok else 'NOT MET'}")
    # 4. below the front: half the smallest checkpoint peak answers with a plan inside it
    sb = next(s for s, (role, v) in roles.items() if role == "below")
    r = rows[sb]
    if r["status"] == "ok":
        rm, rr = ratio_of(r, ff)
        inside = r["peak_bytes"] <= _budget(r)
        out.append(f"below the front ({_budget(r) / 2**20:.3f} MiB): peak "
                   f"{r['peak_bytes'] / 2**20:.3f} MiB, time {rm:.3f} x fused full (per-round "
                   f"{rr:.3f}), block {r.get('block')}: {'MET' if inside else 'NOT MET'} "
                   "(inside the budget)")
    else:
        out.append(f"below the front: membptt {r['status']}: {r.get('message', '')[:200]}")
    return out


def _budget(row) -> float:
    b = row.get("budget_bytes")
    return float(b) if b not in (None, "") else math.nan


def plot(csv_path: Path, png: Path) -> None:
    """Memory-time fronts of the group from its CSV (time as per-round ratio to plain)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok" and r.get("ratio_median")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = {
        "ckpt over fused nn.LSTM segments (reentrant)": lambda r: r["method"] == FRONT,
        "ckpt over fused nn.LSTM segments (non-reentrant)": lambda r: r["method"] == FRONT_NR,
        "ckpt over stepped cells, K=32": lambda r: r["method"].startswith("torch-checkpoint")
        and "fused" not in r["method"],
        "membptt MSM, fused blocks (planned)": lambda r: r["method"] == "msm-measured"
        and r.get("block") != "chains" and "tune=1" not in r["label"],
        "membptt MSM, timed among candidates (tune=1)": lambda r: "tune=1" in r["label"],
        "membptt HSM, fused chains (planned)": lambda r: r.get("block") == "chains",
        "plain BPTT (stepped)": lambda r: r["method"] == "full",
        "full BPTT, fused nn.LSTM": lambda r: r["method"] == "full-fused",
    }
    for (label, pick), marker in zip(series.items(), "os^DXP*v"):
        pts = sorted((float(r["peak_bytes"]) / 2**20, float(r["ratio_median"]))
                     for r in rows if pick(r))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label,
                    linestyle="-" if len(pts) > 1 else "none")
    ax.set_xscale("log")
    ax.set_xlabel("measured peak of live tensor bytes (MiB, log)")
    ax.set_ylabel("time per iteration / plain stepped BPTT\n(median of per-round ratios)")
    r0 = rows[0]
    ax.set_title(f"T={r0['seq_len']}, {r0['model']} {r0['hidden']}, batch {r0['batch']}, "
                 f"{r0.get('device', 'cpu')}; one process, interleaved", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=130)
    fig.savefig(png.with_suffix(".pdf"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                    help="sizes and threads: " + "; ".join(
                        f"{k}: {v}" for k, v in sorted(PRESETS.items())))
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--classes", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--model", default="lstm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help=f"checkpoint segment counts (default {DEFAULT_KS}; charlm: 7,14)")
    ap.add_argument("--budgets", type=lambda s: [float(x) for x in s.split(",")],
                    default=[1, 2, 3, 5, 10, 20, 30, 50])
    ap.add_argument("--membptt", type=lambda s: [x.strip() for x in s.split(",")],
                    default=["msm-measured"],
                    help="membptt methods (spec without the budget), comma-separated, e.g. "
                         "msm-measured,hsm-measured:planner=chains (chain planning)")
    ap.add_argument("--out", type=Path, default=Path("results/peers/peers_cpu.csv"))
    ap.add_argument("--plot", type=Path, default=None,
                    help="figure path (default: figures/<out stem>_front.png)")
    args = ap.parse_args(argv)
    for key, value in {"ks": DEFAULT_KS, **PRESETS[args.preset]}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    wc = WorkloadConfig(seq_len=args.seq_len, model=args.model, hidden=args.hidden,
                        batch=args.batch, input_size=args.input_size, classes=args.classes,
                        device=args.device)
    t0 = time.time()
    peaks = front_peaks(wc, args.ks, args.threads)
    specs, roles = build_methods(args, peaks)
    print(f"[peers] {len(specs)} methods in one group; front peaks (MiB): "
          + ", ".join(f"{m.split('-')[-1]} K={k}: {p / 2**20:.2f}" for (m, k), p in peaks.items()),
          flush=True)
    cfg = BenchConfig(methods=specs, workload=wc, repeats=args.rounds, warmup=1, rss=False,
                      threads=args.threads, group=f"peers-{platform.node()}-{int(t0)}",
                      baseline="full")
    rows, code = run_point(cfg, log=lambda m: print(m, flush=True))
    for r in rows:
        r.update(host=platform.node(), device=args.device, torch=torch.__version__,
                 command=" ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
                 started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)))
    by = {r["label"]: r for r in rows}
    plain = by["full"]
    print(f"\n{'method':58s} {'median s':>9s} {'x plain':>8s} {'per-round':>9s} "
          f"{'peak MiB':>9s} {'x plain':>8s} {'block':>5s}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['label']:58s} {r['status']}: {r.get('message', '')[:100]}")
            continue
        rm, rr = ratio_of(r, plain)
        print(f"{r['label']:58s} {statistics.median(_samples(r)):9.3f} {rm:8.3f} {rr:9.3f} "
              f"{r['peak_bytes'] / 2**20:9.2f} {r['peak_bytes'] / plain['peak_bytes']:8.4f} "
              f"{str(r.get('block', '')):>5s}")
    print("\nClaims (issue 9), from this one group:")
    for line in verdicts(by, roles, args, plain["peak_bytes"]):
        print("  " + line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r})
    tmp = args.out.with_name(args.out.name + f".tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)
    os.replace(tmp, args.out)
    png = args.plot or Path("figures") / f"{args.out.stem}_front.png"
    plot(args.out, png)
    print(f"\n[peers] wrote {args.out} and {png} in {time.time() - t0:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
