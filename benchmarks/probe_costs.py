"""Probe a registry model and write its measured cost model as JSON (``membptt plan --costs``).

    .venv/bin/python benchmarks/probe_costs.py --out tests/data/probed_lstm256_b64_cpu.json

The file is ``CostModel.to_dict()`` plus a ``_provenance`` entry (what, where, when, the
command); ``CostModel(**d)`` reads it back once ``_provenance`` is removed. The committed
fixture of ``tests/test_front_door.py`` was made by the command above (the paper's sizes,
2 threads).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import membptt
from membptt.measure import WorkloadConfig, make_workload
from membptt.measure.results import atomic_write_text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lstm")
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = WorkloadConfig(model=args.model, seq_len=args.seq_len, hidden=args.hidden,
                         batch=args.batch, input_size=args.input_size, classes=args.classes)
    w = make_workload(cfg)
    t0 = time.time()
    costs = membptt.probe(w.step_fn, w.state0, w.inputs)
    prov = {"what": f"membptt.probe of the registry model {args.model!r} (input {args.input_size},"
                    f" hidden {args.hidden}, batch {args.batch}, float32, T = {args.seq_len} "
                    f"inputs), {args.threads} threads",
            "host": platform.node(), "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "probe_seconds": round(time.time() - t0, 1),
            "command": " ".join(["benchmarks/probe_costs.py"] + (argv or sys.argv[1:]))}
    atomic_write_text(args.out, json.dumps({"_provenance": prov, **costs.to_dict()}, indent=1))
    print(f"wrote {args.out} ({prov['probe_seconds']} s of probing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
