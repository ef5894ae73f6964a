"""`membptt plan` near its size limits: wall time, CPU time and peak resident memory.

Issue 11 asks that ``membptt plan`` answer or refuse any ``seq_len <= 10^6`` within 10 s and
with less than 2 GiB of resident memory. This script runs the CLI, one process per case, on the
cases that come closest (the longest accepted plans of every strategy, DP tables just under the
byte limit with the most work per cell, DP work just above and below ``max_dp_work``, plans at
the op limit, measured costs), and prints for each: exit status (0 answered, 2 refused),
seconds of wall and CPU time, peak RSS, and whether it is inside both bounds.

    python benchmarks/bench_plan_limits.py            # every case, about 1-2 minutes
    python benchmarks/bench_plan_limits.py --quick    # a third of them

Exit status 1 when a case exceeds a bound or ends with anything but 0 or 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WALL_LIMIT_S = 10.0
RSS_LIMIT = 2 * 2**30

# (label, arguments after `membptt plan`); COSTS is replaced by a measured-costs file
CASES = [
    ("full, T = 5e5 (1e6 ops)", "--strategy full --seq-len 500000 --alpha 2"),
    ("full, T = 1e6 (refused: ops)", "--strategy full --seq-len 1000000 --alpha 2"),
    ("recompute-all, T = 1400", "--strategy recompute-all --seq-len 1400"),
    ("recompute-all, T = 1e6", "--strategy recompute-all --seq-len 1000000"),
    ("chen, T = 2.5e5", "--strategy chen --seq-len 250000 --alpha 2"),
    ("chen, T = 2.5e5, budget 2000", "--strategy chen --seq-len 250000 --alpha 2 --memory 2000"),
    ("chen, T = 1e6, budget 5000", "--strategy chen --seq-len 1000000 --alpha 2 --memory 5000"),
    ("chen-recursive, T = 1e5", "--strategy chen-recursive --seq-len 100000"),
    ("chen-recursive, T = 1e6", "--strategy chen-recursive --seq-len 1000000"),
    ("hsm, T = 1e6, m = 12", "--strategy hsm --seq-len 1000000 --memory 12"),
    ("hsm, T = 1e5, m = 80", "--strategy hsm --seq-len 100000 --memory 80"),
    ("hsm, T = 1e5, m = 100 (work)", "--strategy hsm --seq-len 100000 --memory 100"),
    ("hsm, T = 3e4, m = 320", "--strategy hsm --seq-len 30000 --memory 320"),
    ("hsm, T = 2e5, m = 60", "--strategy hsm --seq-len 200000 --memory 60"),
    ("hsm, T = 1e5, m = 1e5", "--strategy hsm --seq-len 100000 --memory 100000"),
    ("hsm, T = 1e4, m = 1000 (paper)", "--strategy hsm --seq-len 10000 --memory 1000"),
    ("ism, T = 1e5, m = 80", "--strategy ism --seq-len 100000 --memory 80 --alpha 1"),
    ("ism, T = 3e4, m = 320", "--strategy ism --seq-len 30000 --memory 320 --alpha 1"),
    ("msm a=2, T = 2e5, m = 60", "--strategy msm --seq-len 200000 --memory 60 --alpha 2"),
    ("msm a=2, T = 1e5, m = 20", "--strategy msm --seq-len 100000 --memory 20 --alpha 2"),
    ("msm a=2, T = 3e4, m = 160", "--strategy msm --seq-len 30000 --memory 160 --alpha 2"),
    ("msm a=2, T = 3e4, m = 320", "--strategy msm --seq-len 30000 --memory 320 --alpha 2"),
    ("msm a=5, T = 1e4, m = 1000 (paper)", "--strategy msm --seq-len 10000 --memory 1000 --alpha 5"),
    ("msm a=5, T = 1e6, 5 %", "--strategy msm --seq-len 1000000 --memory 5% --alpha 5"),
    ("msm measured costs, T = 2e4, 32 MiB", "--strategy msm --seq-len 20000 --memory 32MiB "
     "--costs COSTS"),
    ("msm measured costs, T = 1e5, 12 MiB", "--strategy msm --seq-len 100000 --memory 12MiB "
     "--costs COSTS"),
    ("msm measured costs, T = 1e5, 5 %", "--strategy msm --seq-len 100000 --memory 5% "
     "--costs COSTS"),
    ("msm measured costs, T = 1e6, 1 %", "--strategy msm --seq-len 1000000 --memory 1% "
     "--costs COSTS"),
]

# float (measured-style) times, which prune less than unit costs, and byte sizes: hidden_bytes
# is the (h, c) state of an LSTM 256 at batch 64 in float32; the times and the internal sizes
# are round numbers of the probe's order of magnitude on this CPU, not a probe's output
COSTS = {"run_fixed": 1.2e-4, "run_per_step": 2.1e-3, "forward_graph": 3.4e-3,
         "backward": 5.6e-3, "hidden_bytes": 131072, "internal_bytes": 655360,
         "beta_bytes": 524288}


def run_case(exe: str, args: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe, "plan", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_bytes": usage.ru_maxrss * 1024, "stderr": err.strip()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="every third case")
    ap.add_argument("--membptt", default=None, help="the membptt executable (default: next to "
                    "this Python, else on PATH)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = ap.parse_args(argv)
    exe = a.membptt or str(Path(sys.executable).with_name("membptt"))
    if not Path(exe).exists():
        exe = shutil.which("membptt") or exe
    cases = CASES[::3] if a.quick else CASES
    rows, bad = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        costs = Path(tmp) / "costs.json"
        costs.write_text(json.dumps(COSTS))
        print(f"{'case':<38} {'rc':>3} {'wall s':>7} {'cpu s':>6} {'RSS MiB':>8}  verdict")
        for label, line in cases:
            args = [str(costs) if w == "COSTS" else w for w in line.split()]
            r = run_case(exe, args)
            ok = r["rc"] in (0, 2) and r["wall_s"] <= WALL_LIMIT_S and r["rss_bytes"] < RSS_LIMIT
            bad += not ok
            what = "answered" if r["rc"] == 0 else ("refused" if r["rc"] == 2 else "FAILED")
            print(f"{label:<38} {r['rc']:>3} {r['wall_s']:>7.2f} {r['cpu_s']:>6.2f} "
                  f"{r['rss_bytes'] / 2**20:>8.0f}  {what}{'' if ok else '  OUT OF BOUNDS'}",
                  flush=True)
            if r["rc"] == 2:
                print(f"    {r['stderr'][:150]}")
            elif r["rc"] != 0:
                print(f"    {r['stderr'][-400:]}")
            rows.append({"case": label, "args": line, **r})
    worst = max(rows, key=lambda r: r["wall_s"])
    print(f"\nslowest: {worst['case']} {worst['wall_s']:.2f} s; largest RSS "
          f"{max(r['rss_bytes'] for r in rows) / 2**20:.0f} MiB; {bad} case(s) out of bounds "
          f"(bounds: {WALL_LIMIT_S:.0f} s, {RSS_LIMIT / 2**30:.0f} GiB)")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
