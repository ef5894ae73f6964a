"""``membptt bench``: measure time, peak memory and gradient error of benchmark methods.

Wired into the main CLI as ``membptt bench`` (``add_bench_parser`` / ``run_bench``); also
runnable as ``python -m membptt.measure.cli``. Example::

    membptt bench --method msm --seq-len 1000 --memory 5% --hidden 256 --batch 64 \\
        --device cpu --repeats 5 --out results/points/msm-1000-5pct.csv

Several methods (``--method full,torch-checkpoint-fused:segments=8,msm-measured``) are measured
in one process with interleaved timing and written as one row each: a *comparison group*
(``--group``); every row has the per-round time ratio to the group's baseline (``--baseline``,
default the first method). Exit status: 0 when every row is ``ok``,
``oom`` or ``infeasible`` (results, not crashes); 1 when a method raised an error (a bug; its
row still says ``status=error`` and the message, printed on stderr even under ``-q``); 2 only
for invalid arguments, reported as one line ``membptt: error: ...`` before the workload is
built (:func:`validate_args`: method names, duplicate specs, per-method options, ``peak()``
references, the model's sizes, sizes, device, budget, alpha/beta, threads, segments, the
output path); 3 when everything was measured but ``--out`` could not be written at the end (a
full disk, ``ulimit -f``, a directory made read-only meanwhile): the table is printed and the
rows are saved next to the target as ``<stem>.unsaved-<time>-<pid>.csv`` (else in the
temporary directory, else on stderr), and a last line on stderr says where.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

__all__ = ["add_bench_parser", "run_bench", "main", "EXIT_UNSAVED"]

EXIT_UNSAVED = 3  # measured, but --out could not be written: the rows are saved elsewhere


def _methods_help() -> str:
    from .methods import METHODS

    return ", ".join(METHODS)


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--method", "-m", required=True,
                   help="method name, or several separated by commas, each optionally with "
                   "its own options (name:segments=8:memory=5%%); one of: " + _methods_help())
    p.add_argument("--seq-len", "-T", type=int, default=100, help="sequence length T")
    p.add_argument("--memory", default=None,
                   help="budget for plan methods: hidden-state units (250), bytes ('512MiB') "
                   "or a percentage of the full-cache memory ('5%%'); ignored by full, "
                   "full-fused and torch-checkpoint")
    p.add_argument("--alpha", type=float, default=None,
                   help="override alpha (default: from probed state sizes)")
    p.add_argument("--beta", type=float, default=None,
                   help="override beta (default: from probed state sizes)")
    p.add_argument("--segments", type=int, default=None,
                   help="segments of the torch-checkpoint* methods (default round(sqrt(T)));"
                   " per method: --method torch-checkpoint-fused:segments=8")
    p.add_argument("--model", default="lstm",
                   help="workload model from membptt.models.registry (lstm, gru, ...)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--classes", type=int, default=256, help="output classes of the head")
    p.add_argument("--batch", "-B", type=int, default=64)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="timed iterations per method")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no-grad-check", dest="grad_check", action="store_false",
                   help="skip the gradient comparison with full")
    p.add_argument("--no-tracker", dest="track_memory", action="store_false",
                   help="skip the live-tensor memory pass")
    p.add_argument("--no-rss", dest="rss", action="store_false",
                   help="skip the RSS pass in a fresh subprocess")
    p.add_argument("--group", default=None,
                   help="comparison group id written in every row (default: host:time:pid)")
    p.add_argument("--baseline", default=None,
                   help="the method (spec as given to --method) every per-round time ratio "
                   "divides by (default: the first method)")
    p.add_argument("--out", "-o", default=None, help="CSV to write (atomically)")
    p.add_argument("--quiet", "-q", action="store_true")
    return p


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` on an ``argparse`` subparsers object; returns the parser."""
    p = subparsers.add_parser("bench", help="measure time and peak memory of methods",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure(p)
    p.set_defaults(func=run_bench)
    return p


def _fmt(v, scale=1.0, spec=".3f") -> str:
    if v is None or v == "":
        return "-"
    try:
        return format(float(v) / scale, spec)
    except (TypeError, ValueError):
        return str(v)


def _print_table(rows: list[dict]) -> None:
    width = max([18] + [len(str(r.get("label") or r["method"])) for r in rows])
    head = (f"{'method':<{width}} {'status':<10} {'time_med_s':>10} {'iqr_s':>8} {'peak_MiB':>9} "
            f"{'pred_MiB':>9} {'rss_MiB':>8} {'fwd_ops':>7} {'grad_err':>9}")
    print(head)
    for r in rows:
        rss = None
        if r.get("rss_peak_bytes") not in (None, "") and r.get("rss_baseline_bytes"):
            rss = r["rss_peak_bytes"] - r["rss_baseline_bytes"]
        print(f"{str(r.get('label') or r['method']):<{width}} {r['status']:<10} {_fmt(r.get('time_median_s')):>10} "
              f"{_fmt(r.get('time_iqr_s')):>8} {_fmt(r.get('peak_bytes'), 2**20, '.2f'):>9} "
              f"{_fmt(r.get('predicted_peak_bytes'), 2**20, '.2f'):>9} "
              f"{_fmt(rss, 2**20, '.1f'):>8} {_fmt(r.get('forward_ops'), 1, '.0f'):>7} "
              f"{_fmt(r.get('grad_error'), 1, '.1e'):>9}")
        if r["status"] != "ok" and r.get("message"):
            print(f"    {r['message']}")


def check_device(device: str) -> None:
    """Refuse a device string that torch cannot parse or this benchmark cannot use."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device: give cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device!r}: the benchmark runs on cpu or cuda[:N] only")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device!r}: CUDA is not available here (torch "
                             f"{torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s), 0.."
                             f"{torch.cuda.device_count() - 1}")


def _size_ratio(name: str, value) -> None:
    if value is not None and (not math.isfinite(value) or value < 1 or value >= 2**63):
        raise ValueError(f"--{name} must be a finite number >= 1 (internal-state size in "
                         f"hidden-state units), got {value!r}")


def validate_args(args: argparse.Namespace) -> tuple[list[str], object]:
    """Check every argument before anything is measured; return the method names and the
    budget (int units or the string). Raises ValueError naming the bad value."""
    from ..models.registry import MODELS
    from ..planning.budget import parse_memory
    from ..planning.strategies import STRATEGIES
    from .bench import check_methods, peak_reference
    from .methods import METHODS, PlanMethod, TorchCheckpoint, parse_method_spec
    from .results import check_output_path
    from .workload import WorkloadConfig, check_workload

    methods = [m.strip() for m in str(args.method).split(",") if m.strip()]
    bad = [m for m in methods if m.split(":", 1)[0].strip() not in METHODS]
    if not methods or bad:
        raise ValueError(f"--method: unknown method(s) {bad or methods}; valid: "
                         + ", ".join(METHODS))
    specs = {}
    for m in methods:
        try:
            specs[m] = parse_method_spec(m)
        except ValueError as e:
            raise ValueError(f"--method: {e}") from None
    if args.model not in MODELS:
        raise ValueError(f"--model: unknown model {args.model!r}; valid: {', '.join(MODELS)}")
    if args.baseline is not None and args.baseline not in methods:
        raise ValueError(f"--baseline {args.baseline!r} is not one of the methods {methods}")
    for name in ("seq_len", "hidden", "input_size", "classes", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got "
                             f"{getattr(args, name)}")
    for name in ("repeats", "warmup"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    for name in ("threads", "segments"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1 (or left out for the default), got "
                             f"{getattr(args, name)}")
    check_device(args.device)
    _size_ratio("alpha", args.alpha)
    _size_ratio("beta", args.beta)
    if args.alpha is not None and args.beta is not None and args.beta > args.alpha:
        raise ValueError(f"--beta must be <= --alpha, got beta={args.beta} > alpha={args.alpha}")
    def checked(budget, where):
        """The budget's kind, refused (naming ``where``) when unparsable or not positive."""
        try:
            kind, value = parse_memory(str(budget))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if value <= 0:
            raise ValueError(f"{where} {budget!r} must be positive (at least 1 unit)")
        return kind

    classes = [METHODS[specs[m][0]] for m in methods]
    users = {"segments": [c for c in classes if issubclass(c, TorchCheckpoint)],
             "alpha": [c for c in classes if issubclass(c, PlanMethod)],
             "beta": [c for c in classes if issubclass(c, PlanMethod)],
             "memory": [c for c in classes if issubclass(c, PlanMethod)
                        and not c.ignores_budget]}
    for key, used_by in users.items():  # an option no method uses would be silently ignored
        if getattr(args, key) is not None and not used_by:
            who = ("the torch-checkpoint* methods" if key == "segments" else
                   "the plan methods other than full-plan" if key == "memory" else
                   "the plan methods")
            raise ValueError(f"--{key} {getattr(args, key)!r} is used by {who}, and none of "
                             f"--method {','.join(methods)} is one: it would be ignored")
    memory = args.memory
    if memory is not None and checked(memory, "--memory") == "units":
        memory = int(str(memory).strip())
    try:  # duplicates, per-method options, peak() references
        check_methods(methods, {"memory": memory, "alpha": args.alpha, "beta": args.beta,
                                "segments": args.segments}, args.seq_len)
    except ValueError as e:
        raise ValueError(f"--method {e}") from None
    for m in methods:
        name, own = specs[m]
        cls = METHODS[name]
        if not issubclass(cls, PlanMethod):
            continue
        if args.seq_len < 3:
            raise ValueError(f"--seq-len must be >= 3 for the plan method {m!r} (probing the "
                             f"step needs three steps), got {args.seq_len}")
        mine = own.get("memory", memory)
        if mine is not None and peak_reference(mine) is None:
            checked(mine, f"--method {m}: memory")
        if (mine is None and not cls.ignores_budget
                and STRATEGIES[cls.strategy].needs_memory):
            raise ValueError(f"--method {m} needs --memory (units, bytes or a percentage, "
                             "e.g. --memory 5%)")
    check_workload(WorkloadConfig(seq_len=args.seq_len, model=args.model, hidden=args.hidden,
                                  batch=args.batch, input_size=args.input_size,
                                  classes=args.classes, device="cpu", dtype=args.dtype,
                                  seed=args.seed))
    if args.out is not None:
        check_output_path(args.out)
    return methods, memory


@contextlib.contextmanager
def _exit_on_sigterm():
    """While measuring, SIGTERM raises SystemExit (status 143) instead of killing the process
    outright, so that the RSS subprocess is killed and temporary files are removed on the way
    out. The previous handler comes back afterwards; outside the main thread nothing changes."""
    import signal
    import threading

    def _term(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_bench(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run the ``bench`` command; returns the exit status (see module docstring)."""
    from .bench import BenchConfig, run_point
    from .results import provenance, write_rows
    from .workload import WorkloadConfig

    try:
        methods, memory = validate_args(args)
    except ValueError as e:
        print(f"membptt: error: {e}", file=sys.stderr)
        return 2
    options = {"memory": memory, "alpha": args.alpha, "beta": args.beta,
               "segments": args.segments}
    wc = WorkloadConfig(seq_len=args.seq_len, model=args.model, hidden=args.hidden,
                        batch=args.batch,
                        input_size=args.input_size, classes=args.classes, device=args.device,
                        dtype=args.dtype, seed=args.seed)
    group = args.group
    if group is None:
        import datetime
        import socket

        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        group = f"{socket.gethostname()}:{now}:{os.getpid()}"
    cfg = BenchConfig(methods=methods, workload=wc, options=options, repeats=args.repeats,
                      warmup=args.warmup, grad_check=args.grad_check,
                      track_memory=args.track_memory, rss=args.rss, threads=args.threads,
                      group=group, baseline=args.baseline)
    log = (lambda *a, **k: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if args.threads:  # before provenance, which records the thread count
        import torch

        torch.set_num_threads(int(args.threads))
    prov = provenance(args.device, argv)
    with _exit_on_sigterm():
        try:
            rows, code = run_point(cfg, log=log)
        except Exception as exc:  # noqa: BLE001 - the whole point failed (e.g. building data)
            from .bench import _message, classify_exception

            status = classify_exception(exc)
            rows = [{"method": m.split(":", 1)[0].strip(), "label": m, "group": group,
                     "group_baseline": args.baseline or methods[0], "status": status,
                     "message": _message(exc), "seq_len": args.seq_len, "hidden": args.hidden,
                     "batch": args.batch, "model": args.model}
                    for m in methods]
            code = 0 if status in ("oom", "infeasible") else 1
            whole_point_failed = True
        else:
            whole_point_failed = False
        rows = [{**r, **prov} for r in rows]
        if not args.quiet:
            _print_table(rows)
        else:  # quiet: no progress and no table, but never a silent failure
            for r in rows:
                if r["status"] == "error":
                    print(f"membptt: bench: {r.get('label') or r['method']}: error: "
                          f"{r.get('message')}", file=sys.stderr)
        if args.out is not None and whole_point_failed and os.path.exists(args.out):
            # nothing was measured: an existing --out (earlier measurements) is not replaced
            # by rows that only say so; they go beside it
            from .results import save_fallback

            where = save_fallback(args.out, rows)
            print(f"membptt: bench: nothing was measured ({rows[0]['status']}); --out "
                  f"{args.out!r} is left as it was"
                  + (f", the rows are in {where!r}" if where else ""), file=sys.stderr)
            return code
        if args.out is not None:
            try:
                write_rows(args.out, rows)
            except (OSError, ValueError) as e:  # measured, and not lost: saved elsewhere
                return _unsaved(args, rows, e)
    return code


def _unsaved(args: argparse.Namespace, rows: list[dict], exc: BaseException) -> int:
    """The rows could not be written to ``--out``: print the table (stdout), save the rows
    next to the target, else in the temporary directory, else as CSV on stderr, say where
    (stderr, first), and return :data:`EXIT_UNSAVED`."""
    from .results import rows_csv, save_fallback

    def say(text, stream):
        try:
            print(text, file=stream, flush=True)
        except (OSError, ValueError):  # e.g. stderr is a file over `ulimit -f` too
            pass

    where = save_fallback(args.out, rows)
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    say(f"membptt: error: measured {len(rows)} row(s) but could not write --out "
        f"{args.out!r} ({why}); the rows are saved "
        + (f"in {where!r}" if where else "as CSV on stderr below (no file could be written)")
        + f"; exit status {EXIT_UNSAVED}", sys.stderr)
    if args.quiet:  # the table was not printed yet
        try:
            _print_table(rows)
        except (OSError, ValueError):
            pass
    if where is None:
        say(f"----- unsaved rows of --out {args.out!r} -----\n{rows_csv(rows)}"
            "----- end of unsaved rows -----", sys.stderr)
    return EXIT_UNSAVED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="membptt-bench")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
