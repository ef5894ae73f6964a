"""Each method in its own process, as a training loop runs it (issue 18).

``bench_peers.py`` times every method in one process, interleaved round by round, so that a
slow spell of the machine hits all alike. On a CPU with glibc's allocator that protocol has a
cost: a method's time depends on what the process ran before it. glibc serves large blocks
with ``mmap`` and trims its heap as blocks are freed (thresholds that move with the history),
so whether a call's tensors land on pages already mapped or page-fault fresh ones depends on
which methods ran before. At the paper's sizes and K = 16's peak, HSM on blocks of 32 steps
ran 1.040x ``torch.utils.checkpoint`` in an interleaved group and 0.899x with each method in
its own process (``docs/executor-speed.md``). A training loop runs one method over and over,
so this benchmark measures that:

* one child process per method and round: it builds the workload, prepares the method, runs
  ``--warmup`` iterations untimed and ``--iters`` timed (median), then measures one
  iteration's peak of live tensor bytes;
* rounds alternate the processes (the order rotates each round), and every ratio is taken
  within a round against the checkpoint at the same K, then the median over rounds: machine
  drift between rounds cancels as in ``bench_peers.py``;
* membptt plans from one probe (taken once, in a child, saved as JSON), so every round runs
  the same plans: ``membptt`` is ``membptt.plan`` at the checkpoint's measured peak, ``tuned``
  is ``membptt.tune`` at that peak (it times its candidates in the child, as a user's process
  would; its timed loop then runs after the candidates' iterations, so its process has that
  history too), ``own`` is HSM on blocks of exactly ``ceil(T / K)`` steps (the checkpoint's
  schedule) with memory to spare.

::

    .venv/bin/python benchmarks/bench_steady.py --preset paper --ks 8,16,32 --rounds 3 \
        --out results/peers/steady_paper_cpu.csv
    .venv/bin/python benchmarks/bench_steady.py --preset launch --rounds 5 \
        --out results/peers/steady_launch_cpu.csv

The CSV (written atomically at the end; a failed child stops the run and writes nothing) has
one row per method and round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROLES = ("ckpt", "own", "membptt", "tuned")


def child(spec: dict) -> dict:
    """Run one method as a training loop in this process; the measurement as a dict."""
    import torch

    import membptt
    from membptt.measure.memory import tracked_peak
    from membptt.measure.methods import make_method
    from membptt.measure.workload import WorkloadConfig, make_workload
    from membptt.planning import CostModel

    torch.set_num_threads(spec["threads"])
    w = make_workload(WorkloadConfig(**spec["workload"]))
    T = spec["workload"]["seq_len"]
    role, K = spec["role"], spec["k"]
    out = {"role": role, "k": K}
    t0 = time.perf_counter()
    if role == "ckpt":
        m = make_method(f"torch-checkpoint-fused-reentrant:segments={K}", w)
        m.prepare()
        run = m.run
    else:
        with open(spec["costs"]) as f:
            costs = CostModel(**json.load(f))
        mem = f"{spec['memory']}B"
        if role == "own":
            p = membptt.plan("hsm", T, mem, costs=costs, block=-(-T // K))
        elif role == "membptt":
            p = membptt.plan("msm", T, mem, costs=costs)
        else:
            p = membptt.tune(w.step_fn, w.state0, w.inputs, "msm", mem, costs=costs)
            tu = p.info["tune"]
            out["tune_picked"] = tu["picked"]
            out["tune_choice"] = tu["planner_choice"]
            out["tune_s"] = round(tu["seconds"], 2)
        out.update(plan=f"{p.strategy} {p.planner}, {p.shape}", budget_bytes=spec["memory"],
                   predicted_s=p.predicted_cost)

        def run():
            loss = membptt.bptt(w.step_fn, w.state0, w.inputs, p)
            loss.backward()
            return loss.detach()
    out["prepare_s"] = round(time.perf_counter() - t0, 3)
    times = []
    for i in range(spec["warmup"] + spec["iters"]):
        w.zero_grad()
        t = time.perf_counter()
        run()
        if w.device.type == "cuda":
            torch.cuda.synchronize(w.device)
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t)
    w.zero_grad()
    out["peak_bytes"] = tracked_peak(run)[0]
    out["times_s"] = times
    out["median_s"] = statistics.median(times)
    return out


def _spawn(spec: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"[steady] child {spec['role']} K={spec['k']} failed "
                         f"(exit {r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _setup(args, wc: dict, costs_path: str) -> dict:
    """In a child: the probe (saved to ``costs_path``) and the checkpoints' measured peaks."""
    import torch
    from bench_peers import FRONT, FRONT_NR, front_peaks

    import membptt
    from membptt.measure.workload import WorkloadConfig, make_workload

    torch.set_num_threads(args.threads)
    cfg = WorkloadConfig(**wc)
    w = make_workload(cfg)
    costs = membptt.probe(w.step_fn, w.state0, w.inputs)
    Path(costs_path).write_text(json.dumps(costs.to_dict()))
    peaks = front_peaks(cfg, args.ks, args.threads)
    return {str(k): [peaks[(FRONT, k)], peaks[(FRONT_NR, k)]] for k in args.ks}


def main(argv=None) -> int:
    from bench_peers import PRESETS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--setup", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    ap.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="checkpoint segment counts (default: the preset's, 4..128)")
    ap.add_argument("--roles", type=lambda s: [x.strip() for x in s.split(",")],
                    default=list(ROLES), help=f"methods per K, from {', '.join(ROLES)}")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("results/peers/steady_cpu.csv"))
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    preset = dict(PRESETS[args.preset])
    ks = preset.pop("ks", [4, 8, 16, 32, 64, 128])
    threads = preset.pop("threads")
    args.ks = args.ks or ks
    args.threads = args.threads or threads
    if args.setup:
        wc, path = json.loads(args.setup[0]), args.setup[1]
        print(json.dumps(_setup(args, wc, path)))
        return 0
    bad = [r for r in args.roles if r not in ROLES]
    if bad or "ckpt" not in args.roles:
        raise SystemExit(f"--roles must include ckpt and be from {', '.join(ROLES)}; got "
                         f"{args.roles}")
    for name in ("rounds", "iters"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}")
    from membptt.measure.results import check_output_path

    try:  # before a run of many minutes, not after it
        check_output_path(args.out)
    except ValueError as e:
        raise SystemExit(f"--out: {e}") from None
    wc = dict(model="lstm", dtype="float32", **preset)
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        costs_path = os.path.join(tmp, "costs.json")
        cmd = [sys.executable, __file__, "--preset", args.preset, "--threads",
               str(args.threads), "--ks", ",".join(map(str, args.ks)), "--setup",
               json.dumps(wc), costs_path]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"[steady] setup failed:\n{r.stderr[-4000:]}")
        peaks = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"[steady] probe and checkpoint peaks in {time.time() - t_start:.0f} s; peaks "
              "(MiB): " + ", ".join(f"K={k}: {min(v) / 2**20:.2f}" for k, v in peaks.items()),
              flush=True)
        specs = []
        for K in args.ks:
            budget = min(peaks[str(K)])
            for role in args.roles:
                specs.append({"role": role, "k": K, "workload": wc, "threads": args.threads,
                              "costs": costs_path, "warmup": args.warmup, "iters": args.iters,
                              "memory": 4 * max(peaks[str(K)]) if role == "own" else budget})
        rows = []
        for rnd in range(args.rounds):
            order = specs[rnd % len(specs):] + specs[:rnd % len(specs)]
            got = {}
            for spec in order:
                res = _spawn(spec)
                got[(spec["role"], spec["k"])] = res
                print(f"[steady] round {rnd + 1}: {spec['role']} K={spec['k']}: "
                      f"{res['median_s']:.4f} s, peak {res['peak_bytes'] / 2**20:.2f} MiB"
                      + (f", {res['plan']}" if "plan" in res else ""), flush=True)
            for (role, K), res in got.items():
                base = got[("ckpt", K)]["median_s"]
                rows.append({"preset": args.preset, "round": rnd + 1, "role": role, "k": K,
                             "median_s": res["median_s"], "ratio_to_ckpt": res["median_s"] / base,
                             "peak_bytes": res["peak_bytes"],
                             "budget_bytes": res.get("budget_bytes", ""),
                             "plan": res.get("plan", ""),
                             "predicted_s": res.get("predicted_s", ""),
                             "tune_picked": res.get("tune_picked", ""),
                             "tune_choice": res.get("tune_choice", ""),
                             "tune_s": res.get("tune_s", ""), "prepare_s": res["prepare_s"],
                             "times_s": " ".join(f"{t:.5f}" for t in res["times_s"]),
                             "threads": args.threads, "iters": args.iters,
                             "warmup": args.warmup,
                             "command": "bench_steady.py " + " ".join(sys.argv[1:])})
    print(summary(rows, args))
    import csv
    import io

    from membptt.measure.results import atomic_write_text

    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=list(rows[0]))
    wr.writeheader()
    wr.writerows(rows)
    atomic_write_text(args.out, buf.getvalue())
    print(f"[steady] wrote {args.out} in {time.time() - t_start:.0f} s")
    return 0


def summary(rows: list[dict], args) -> str:
    """Per K and role: median time, median of per-round ratios to the checkpoint, peak."""
    lines = [f"{'K':>4} {'role':8} {'median s':>9} {'x ckpt':>7} {'peak MiB':>9}  plan"]
    for K in args.ks:
        ck = [r for r in rows if r["k"] == K and r["role"] == "ckpt"]
        for role in args.roles:
            rs = [r for r in rows if r["k"] == K and r["role"] == role]
            if not rs:
                continue
            ratio = statistics.median(r["ratio_to_ckpt"] for r in rs)
            inside = all(r["peak_bytes"] <= max(c["peak_bytes"] for c in ck) for r in rs)
            verdict = ""
            if role in ("membptt", "tuned"):
                verdict = ("MET" if ratio <= 1.0 and inside else "NOT MET") + (
                    "" if inside else " (peak above the checkpoint's)")
            elif role == "own":
                verdict = "MET" if ratio <= 1.02 else "NOT MET"
            plans = sorted({r["plan"] for r in rs if r["plan"]})
            lines.append(f"{K:>4} {role:8} {statistics.median(r['median_s'] for r in rs):9.4f} "
                         f"{ratio:7.3f} {statistics.median(r['peak_bytes'] for r in rs) / 2**20:9.2f}"
                         f"  {'; '.join(plans)} {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
