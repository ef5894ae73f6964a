"""Command line: ``membptt plan ...`` (and ``membptt bench ...``, see membptt.measure.cli).

Bad input prints one line ``membptt: error: ...`` and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .planning import STRATEGIES, CostModel, plan
from .planning.limits import DEFAULT_MAX_DP_WORK, DEFAULT_MAX_OPS, DEFAULT_MAX_TABLE_BYTES


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: exit 2 like ours
        self.print_usage(sys.stderr)
        self.exit(2, f"membptt: error: {message}\n")


def _strategies_help() -> str:
    return "; ".join(f"{name}: {s.description}" for name, s in sorted(STRATEGIES.items()))


def _load_costs(path: str | None) -> CostModel | None:
    if path is None:
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read a cost model from {path!r}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"cost model file {path!r} must hold a JSON object")
    fields = set(CostModel.__dataclass_fields__)
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"cost model file {path!r} has unknown keys {unknown}; valid keys: "
                         + ", ".join(sorted(fields)))
    try:
        return CostModel(**data)
    except (ValueError, TypeError) as e:  # named as the file spells it: segments.forward
        import re

        text = re.sub(r"\bCostModel\.segments: ", "segments: ", str(e))
        text = re.sub(r"\bSegmentCosts\.__init__\(\)", "segments", text)
        text = re.sub(r"\bSegmentCosts\.(\w+)", r"segments.\1", text)
        text = re.sub(r"\bCostModel\.(\w+)", r"\1", text)
        raise ValueError(f"cost model file {path!r}: {text}") from None


def _block_value(text: str):
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        hint = {"auto": " (--planner blocks chooses K)", "chains": " (use --planner chains)",
                "none": " (use --planner steps)"}.get(text, "")
        raise argparse.ArgumentTypeError(
            f"--block must be an integer block length K >= 1, got {text!r}{hint}") from None
    return k


def _add_plan_parser(sub) -> None:
    p = sub.add_parser(
        "plan", help="compile and simulate a plan",
        description="Compile a plan, simulate it and print its counts, peak memory and cost. "
                    "Strategies: " + _strategies_help())
    p.add_argument("--strategy", required=True, help="one of: " + ", ".join(sorted(STRATEGIES)))
    p.add_argument("--seq-len", required=True, type=int, help="number of time steps T")
    p.add_argument("--memory", default=None,
                   help="budget: hidden-state units (250), bytes (512MiB), a percentage "
                        "(5%%; of plain stepped BPTT's peak, measured when the costs carry it; see --percent-of) or 'min'")
    p.add_argument("--alpha", type=float, default=None,
                   help="internal-state size in hidden-state units (rounded up)")
    p.add_argument("--beta", type=float, default=None,
                   help="internal-state size when its input is stored (beta form)")
    p.add_argument("--costs", default=None, metavar="JSON",
                   help="cost model file (CostModel fields: run_fixed, run_per_step, "
                        "forward_graph, backward, hidden_bytes, internal_bytes, beta_bytes, "
                        "working_bytes, segments)")
    p.add_argument("--planner", default="auto", choices=("auto", "steps", "blocks", "chains"),
                   help="auto (default): steps without segments in --costs, else the planner "
                        "of least predicted time; steps: the paper's DP on single steps; "
                        "blocks: the DP on blocks of K steps priced as fused calls (hsm, ism, "
                        "msm); chains: BPTT-HSM with fused chains of any length (hsm)")
    p.add_argument("--block", default=None, type=_block_value, metavar="K",
                   help="a fixed block length K for --planner blocks (implies it)")
    p.add_argument("--percent-of", default="stepped", choices=("stepped", "fused"),
                   help="what a percentage budget is of: stepped BPTT's bytes (default) or "
                        "fused BPTT's (needs segments in --costs)")
    p.add_argument("--max-table-mib", type=float, default=None, metavar="MIB",
                   help="refuse DP tables above this size (default "
                        f"{DEFAULT_MAX_TABLE_BYTES // 2**20} MiB)")
    p.add_argument("--max-ops", type=int, default=None,
                   help=f"refuse plans of more ops than this (default {DEFAULT_MAX_OPS})")
    p.add_argument("--max-dp-work", type=int, default=None, metavar="UNITS",
                   help="abandon a DP table needing more work units than this (Q "
                        "evaluations, search intervals, cells; for the chain planner 4 "
                        "candidate evaluations; default "
                        f"{DEFAULT_MAX_DP_WORK:.0e})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", action="store_true", help="print the execution order (Fig. 3 style)")
    p.add_argument("--ops", action="store_true", help="print the ops, one compact token each")


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine, or of the cgroup the process runs in when that is
    less (``memory.max``); None where neither can be read."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            sizes.append(int(text))
    sizes = [n for n in sizes if n > 0]
    return min(sizes) if sizes else None


def _table_bytes(mib) -> int | None:
    if mib is None:
        return None
    import math

    if not math.isfinite(mib) or mib <= 0 or mib * 2**20 >= 2**63:
        raise ValueError(f"--max-table-mib must be a positive number of MiB below 2**43, "
                         f"got {mib!r}")
    have = machine_memory_bytes()
    if have is not None and mib * 2**20 > have:
        raise ValueError(f"--max-table-mib {mib:g} is above this machine's memory "
                         f"({have / 2**20:,.0f} MiB): a table that large could not be "
                         f"allocated; give at most {have // 2**20} (and leave room for the "
                         "rest of the process)")
    return max(1, int(mib * 2**20))


def _strict_json(obj):
    """``obj`` with every non-finite float (inf, nan) as None: strict JSON (RFC 8259) has no
    ``Infinity`` or ``NaN``, and ``json.dumps(..., allow_nan=False)`` refuses them."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    return obj


def _run_plan(args) -> int:
    costs = _load_costs(args.costs)
    p = plan(args.strategy, args.seq_len, args.memory, alpha=args.alpha, beta=args.beta,
             costs=costs, planner=args.planner, block=args.block, percent_of=args.percent_of,
             max_table_bytes=_table_bytes(args.max_table_mib), max_ops=args.max_ops,
             max_dp_work=args.max_dp_work)
    if args.json:
        d = p.to_dict(with_ops=args.ops)
        if args.trace:
            d["trace"] = p.trace()
        print(json.dumps(_strict_json(d), allow_nan=False))
        return 0
    print(p)
    if p.budget is not None:
        print(f"budget: {p.budget.requested} -> {p.budget.units} units ({p.budget.note})")
    print(f"forward ops: {p.forward_ops} (cost per step C/t = {p.cost_per_step:.4f}), "
          f"backward ops: {p.backward_ops}, graph forwards: {p.graph_forwards}")
    print(f"peak memory: {p.peak_memory} units"
          + (f", {p.peak_bytes} bytes" if p.peak_bytes is not None else ""))
    print(f"predicted cost: {p.predicted_cost:.6g} (forward {p.forward_cost:.6g})")
    if p.predicted_peak_bytes is not None:
        print(f"predicted peak (stored + working set): {p.predicted_peak_bytes} bytes")
    print(f"planner: {p.planner}" + (f", blocks of {p.block} steps" if p.block else ""))
    for r in p.info.get("planners", ()) if len(p.info.get("planners", ())) > 1 else ():
        print(f"  planner {r['planner']}: " + (
            f"predicted cost {r['predicted_cost']:.6g}" if "predicted_cost" in r
            else r.get("refused") or r.get("skipped")))
    if p.info:
        print("info: " + ", ".join(f"{k}={v}" for k, v in p.info.items()
                                   if k not in ("segment_lengths", "candidates", "planners")))
    for c in p.info.get("candidates", ()):
        peak = c["predicted_peak_bytes"]
        print(f"  block {c['k']}: " + (f"predicted cost {c['predicted_cost']:.6g}"
                                       + ("" if peak is None else f", peak {peak} B")
                                       if c["feasible"] else "infeasible (below its minimum)"))
    if args.trace:
        print(p.trace())
    if args.ops:
        print(p.ops_text())
    return 0


def build_parser(bench: bool = True) -> argparse.ArgumentParser:
    """The ``membptt`` parser; ``bench=False`` leaves out ``bench`` (which imports torch)."""
    parser = _Parser(prog="membptt", description="Memory-efficient backpropagation through time")
    parser.add_argument("--version", action="version", version=f"membptt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_plan_parser(sub)
    add_bench_parser = None
    if bench:
        try:
            from .measure.cli import add_bench_parser
        except ImportError:  # the measurement module needs torch
            pass
    if add_bench_parser is not None:
        add_bench_parser(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(bench=argv[:1] != ["plan"])  # `plan` never needs torch
    args = parser.parse_args(argv)
    try:
        if args.command == "plan":
            return _run_plan(args)
        if args.command == "bench":
            from .measure.cli import run_bench

            return run_bench(args)
    except ValueError as e:
        print(f"membptt: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:  # a plan the limits let through and the machine could not hold
        if args.command != "plan":
            raise
        print("membptt: error: out of memory while planning: give a smaller budget or a "
              "shorter sequence, or a lower --max-table-mib (tables are refused above it "
              "before they are allocated)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `membptt plan ... --ops | head`: the reader left, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141  # what a shell reports for a writer killed by SIGPIPE
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
