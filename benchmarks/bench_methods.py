"""All benchmark methods at the memory of `torch-checkpoint` (issue 4's headline comparison).

1. Build the workload (default: the paper's LSTM, T = 1000, hidden 256, input 256, batch 64).
2. Measure `torch-checkpoint`'s peak live tensor bytes P (tracker, one iteration) and the
   working-set constant W (membptt.measure.iteration_working_bytes).
3. Give every plan method the byte budget P - W: the planner keeps its stored states within it,
   so its measured peak (at most predicted + W, docs/results-schema.md) is at most P. With
   ``--calibrate`` (default), the budget is then raised to P - E, where E is the excess over its
   prediction actually measured for `msm-measured` at P - W (E < W: not all of the working
   set is live at the peak), minus one hidden state of margin; it is kept only if
   `msm-measured`'s measured peak at that budget is still <= P. Every row's peak is checked
   against P in the printed table ("<=P").
4. Measure every method in one process (membptt.measure.run_point: gradient check against
   `full`, tracker peaks, RSS in fresh processes, interleaved timing), write the rows to
   ``--out`` and print the comparison, flagging any plan method whose measured peak exceeds P.

Run:  .venv/bin/python benchmarks/bench_methods.py --repeats 5 --out results/points/at-ckpt.csv
"""

from __future__ import annotations

import argparse
import sys

import torch

from membptt.measure import (
    METHODS,
    BenchConfig,
    WorkloadConfig,
    iteration_working_bytes,
    make_workload,
    provenance,
    run_point,
    tracked_peak,
    write_rows,
)

DEFAULT_METHODS = ("full,full-fused,torch-checkpoint,full-plan,chen,chen-recursive,hsm,ism,msm,"
                   "msm-measured")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--no-calibrate", dest="calibrate", action="store_false")
    ap.add_argument("--no-rss", dest="rss", action="store_false")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    wc = WorkloadConfig(seq_len=args.seq_len, hidden=args.hidden, batch=args.batch,
                        input_size=args.input_size, classes=args.classes, device=args.device)
    w = make_workload(wc)
    ck = METHODS["torch-checkpoint"](w, {})
    ck.prepare()
    w.zero_grad()
    ck.run()  # warm-up
    w.zero_grad()
    P, _, _ = tracked_peak(ck.run)
    W = iteration_working_bytes(w, chains=True)  # the larger one: plans may link steps
    budget = f"{P - W}B"
    print(f"torch-checkpoint peak P = {P} B ({P / 2**20:.2f} MiB); working set W = {W} B "
          f"({W / 2**20:.2f} MiB); plan budget P - W = {budget}", flush=True)
    del ck
    w.zero_grad()
    if args.calibrate:
        def measured(mem):
            m = METHODS["msm-measured"](w, {"memory": mem})
            m.prepare()
            w.zero_grad()
            m.run()
            w.zero_grad()
            peak, _, _ = tracked_peak(m.run)
            w.zero_grad()
            return peak, m.plan.peak_bytes

        peak0, pred0 = measured(budget)
        excess = peak0 - pred0
        hidden = w.state0[0].nbytes + w.state0[1].nbytes
        cand = f"{P - excess - hidden}B"
        peak1, pred1 = measured(cand)
        print(f"calibration: msm-measured at {budget}: peak {peak0} B = predicted {pred0} B + "
              f"{excess} B ({excess / W:.2f} W); at {cand}: peak {peak1} B "
              f"({'<=' if peak1 <= P else '>'} P)", flush=True)
        if peak1 <= P:
            budget = cand

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    cfg = BenchConfig(methods=methods, workload=wc, options={"memory": budget},
                      repeats=args.repeats, warmup=args.warmup, rss=args.rss,
                      threads=args.threads)
    rows, code = run_point(cfg, log=lambda msg: print(msg, flush=True))
    prov = provenance(args.device, ["python", *sys.argv])
    rows = [{**r, **prov} for r in rows]
    if args.out:
        write_rows(args.out, rows)

    ref = {r["method"]: r for r in rows}.get("torch-checkpoint", {})
    t_ck = ref.get("time_median_s")
    print(f"\nT={wc.seq_len} hidden={wc.hidden} batch={wc.batch} device={args.device} "
          f"threads={torch.get_num_threads()}; budget for plan methods: {budget}")
    print(f"{'method':<17}{'status':<8}{'time_s':>8}{'iqr_s':>8}{'x_ckpt':>7}{'peak_MiB':>10}"
          f"{'<=P':>5}{'pred+W_MiB':>11}{'rss_MiB':>9}{'fwd_ops':>8}{'grad_err':>10}")
    for r in rows:
        t = r.get("time_median_s")
        peak = r.get("peak_bytes")
        pred = r.get("predicted_peak_bytes")
        rss = (r["rss_peak_bytes"] - r["rss_baseline_bytes"]
               if r.get("rss_peak_bytes") is not None and r.get("rss_baseline_bytes") else None)

        def f(v, s=1.0, spec=".3f"):
            return "-" if v is None else format(v / s, spec)

        print(f"{r['method']:<17}{r['status']:<8}{f(t):>8}{f(r.get('time_iqr_s')):>8}"
              f"{f(t / t_ck if t and t_ck else None, 1, '.2f'):>7}{f(peak, 2**20, '.2f'):>10}"
              f"{('yes' if peak is not None and peak <= P else 'NO'):>5}"
              f"{f(pred + W if pred is not None else None, 2**20, '.2f'):>11}"
              f"{f(rss, 2**20, '.1f'):>9}{f(r.get('forward_ops'), 1, '.0f'):>8}"
              f"{f(r.get('grad_error'), 1, '.1e'):>10}")
        if r["status"] != "ok":
            print(f"    {r['message']}")
    m = {r["method"]: r for r in rows}.get("msm-measured")
    if m and m.get("time_median_s") and t_ck and m.get("peak_bytes") is not None:
        faster = m["time_median_s"] < t_ck
        within = m["peak_bytes"] <= P
        print(f"\nmsm-measured vs torch-checkpoint: time {m['time_median_s']:.3f} s vs "
              f"{t_ck:.3f} s ({m['time_median_s'] / t_ck:.2f}x), peak "
              f"{m['peak_bytes'] / 2**20:.2f} MiB vs {P / 2**20:.2f} MiB -> "
              f"{'faster' if faster else 'NOT faster'} at "
              f"{'equal or lower' if within else 'HIGHER'} peak")
    return code


if __name__ == "__main__":
    sys.exit(main())
