"""One benchmark point: several methods on one workload, measured in one process.

:func:`run_point` does, in this order, for the methods that are still healthy:

1. ``prepare`` every method (planning and probing are not timed);
2. gradient check: one iteration of ``full`` on the batch gives the reference gradients; one
   iteration of every method gives ``grad_error`` (see :func:`grad_error`) and ``loss``;
3. memory pass (separate from timing): one iteration per method under the live-tensor tracker
   (``peak_bytes``), then on CUDA one more without the tracker for ``cuda_peak_bytes``;
4. RSS pass: one fresh subprocess per method (``rss_peak_bytes``, ``rss_baseline_bytes``; see
   :mod:`membptt.measure.rss`);
5. timing: ``warmup`` untimed rounds, then ``repeats`` rounds, methods interleaved;
6. the comparison group: every row gets ``group`` (``BenchConfig.group``) and
   ``group_baseline`` (``BenchConfig.baseline``, default the first method), and every timed
   method the per-round ratios of its time to the baseline's (``ratio_median``, ``ratio_q1``,
   ``ratio_q3``, ``ratio_samples``): round ``r`` of both ran in one interleaved sweep, so a
   ratio never divides numbers taken at different times. Compare methods only through these
   ratios (or through ``time_samples_s`` of two rows of one group, round by round).

A failing method gets ``status`` ``oom`` (out of memory), ``infeasible`` (e.g. a budget below
the strategy's minimum) or ``error`` (anything else: a bug) and a ``message``; the others go on.
"""

from __future__ import annotations

import gc
import re
import traceback
from dataclasses import dataclass, field

import torch

from .memory import cuda_peak, tracked_peak
from .methods import Infeasible, Method, get_method, parse_method_spec
from .rss import measure_rss
from .timing import time_interleaved
from .workload import Workload, WorkloadConfig, make_workload

__all__ = ["BenchConfig", "run_point", "check_methods", "MethodCheck", "grad_error", "classify_exception", "round_ratios",
           "ratio_columns", "EXIT_OK", "EXIT_ERROR"]

EXIT_OK = 0
EXIT_ERROR = 1


@dataclass
class BenchConfig:
    methods: list[str]  # method names or specs "name:key=value:..." (methods.parse_method_spec)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    options: dict = field(default_factory=dict)  # memory, alpha, beta, segments
    repeats: int = 5
    warmup: int = 1
    grad_check: bool = True
    track_memory: bool = True
    rss: bool = True
    threads: int | None = None
    group: str | None = None  # comparison group id written in every row
    baseline: str | None = None  # the spec every method's per-round time ratio divides by


def round_ratios(samples: list[float], base: list[float]) -> list[float]:
    """Per-round time ratios ``samples[r] / base[r]`` of two methods timed in the same rounds.

    Rounds are interleaved (:func:`time_interleaved`), so round ``r`` of both ran within one
    sweep over the group's methods: a slow spell of the machine hits both. Raises if the two
    did not run the same number of rounds.
    """
    if len(samples) != len(base):
        raise ValueError(f"ratio of {len(samples)} rounds to {len(base)} rounds: timed in "
                         "different runs")
    return [a / b for a, b in zip(samples, base)]


def ratio_columns(ratios: list[float]) -> dict:
    """``ratio_median``, ``ratio_q1``, ``ratio_q3`` and ``ratio_samples`` of per-round ratios."""
    from .timing import summarize

    t = summarize(ratios)
    return {"ratio_median": t.median, "ratio_q1": t.q1, "ratio_q3": t.q3,
            "ratio_samples": " ".join(f"{r:.6g}" for r in ratios)}


def classify_exception(exc: BaseException) -> str:
    """``oom`` for out-of-memory, ``infeasible`` for an impossible point, else ``error``."""
    if isinstance(exc, Infeasible):
        return "infeasible"
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), MemoryError) if t)
    if isinstance(exc, oom_types):
        return "oom"
    msg = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("out of memory" in msg
                                          or "can't allocate memory" in msg):
        return "oom"
    return "error"


def _message(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    return text[:2000] + where


def grad_error(grads: dict, ref: dict) -> float:
    """Max over parameters of ``max|g - g_ref| / max|g_ref|`` (inf if a gradient is missing).

    Normalising by the parameter's largest reference entry (not element-wise) keeps entries
    whose true gradient is ~0 from dominating; 0 means bitwise equal.
    """
    worst = 0.0
    for name, r in ref.items():
        g = grads.get(name)
        if r is None and g is None:
            continue
        if r is None or g is None:
            return float("inf")
        scale = r.abs().max().item()
        diff = (g.double() - r.double()).abs().max().item()
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


class _Entry:
    def __init__(self, name: str, method: Method | None):
        self.name = name
        self.spec = name  # the method spec as given (name plus its own options)
        self.options: dict = {}
        self.peak_of: str | None = None  # the spec whose measured peak is this budget
        self.method = method
        self.row: dict = {"method": name, "status": "ok", "message": ""}

    @property
    def ok(self) -> bool:
        return self.row["status"] == "ok"

    def fail(self, exc: BaseException) -> None:
        self.row["status"] = classify_exception(exc)
        self.row["message"] = _message(exc)


def peak_reference(memory) -> str | None:
    """``"peak(SPEC)"`` -> ``SPEC`` (a budget equal to that method's measured peak), else None."""
    if isinstance(memory, str):
        m = re.fullmatch(r"\s*peak\((.+)\)\s*", memory)
        if m:
            return m.group(1).strip()
    return None


@dataclass(frozen=True)
class MethodCheck:
    """One method of a group, checked: its spec, name, merged options and, for a budget
    ``peak(SPEC)``, the spec of the group's method whose peak it is (else None)."""

    spec: str
    name: str
    options: dict
    peak_of: str | None = None


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


def check_methods(methods: list[str], options: dict | None, seq_len: int) -> list[MethodCheck]:
    """Check a group's method specs before any workload is built; raises ``ValueError``.

    Refused: an empty list; a spec given twice (its rows would share one timing); specs that do
    not parse or have unbalanced parentheses; per-method options the method does not use or
    would refuse in ``prepare`` (:meth:`Method.check_options`: ``segments`` outside 1..T,
    ``alpha=nan``, ``beta > alpha``, ``block=`` on a method that is not ``-measured``, ...);
    and ``memory=peak(SPEC)`` budgets whose ``SPEC`` is not one of the group's methods, is the
    method itself, or has a ``peak()`` budget of its own (so no chain and no cycle)."""
    methods = list(methods)
    if not methods:
        raise ValueError("no method given")
    seen = set()
    for m in methods:
        if m in seen:
            raise ValueError(f"method {m!r} is given twice; every spec is timed once and "
                             "writes one row (give different options to compare two)")
        seen.add(m)
    parsed = {}
    for m in methods:
        if isinstance(m, str) and not _balanced(m):
            raise ValueError(f"{m}: unbalanced parentheses (a peak reference is written "
                             "memory=peak(SPEC))")
        name, own = parse_method_spec(m)
        merged = {**(options or {}), **own}
        try:
            get_method(name).check_options(own, merged, seq_len)
        except ValueError as e:
            raise ValueError(f"{m}: {e}") from None
        parsed[m] = (name, merged)

    def budget_ref(spec: str) -> str | None:
        name, merged = parsed[spec]
        cls = get_method(name)
        if not cls.uses_budget or getattr(cls, "ignores_budget", False):
            return None  # the method ignores memory: no reference to resolve
        return peak_reference(merged.get("memory"))

    out = []
    for m in methods:
        ref = budget_ref(m)
        if ref is not None:
            where = f"{m}: memory=peak({ref})"
            if ref == m:
                raise ValueError(f"{where} refers to the method itself; name another method "
                                 f"of the group: {', '.join(x for x in methods if x != m)}")
            if ref not in parsed:
                import difflib

                near = difflib.get_close_matches(ref, [x for x in methods if x != m], n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(f"{where} needs {ref!r} among the group's methods{hint}; "
                                 f"they are: {', '.join(methods)}")
            if budget_ref(ref) is not None:
                raise ValueError(f"{where} refers to {ref!r}, whose budget is itself a peak() "
                                 "reference; the referenced method needs a budget of its own "
                                 "(chains and cycles of peak() references are refused)")
        name, merged = parsed[m]
        out.append(MethodCheck(m, name, merged, ref))
    return out


def _prepare(e: _Entry, log) -> None:
    try:
        e.method.prepare()
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        e.fail(exc)
    log(f"[bench] prepared {e.spec}: {e.row['status']} {e.row['message']}".rstrip())


def _budget_at_peak_of(w: Workload, ref: _Entry) -> str:
    """``"<bytes>B"``: ``ref``'s measured peak of live tensor bytes, as a byte budget.

    A byte budget bounds the *whole* measured peak of an iteration: the planner subtracts the
    probed working set (parameter gradients, the working core, transients) and gives the rest
    to stored states (:mod:`membptt.planning.budget`). So a plan at this budget peaks at or below
    ``ref``'s measured peak. Raises :class:`Infeasible` when ``ref`` failed.
    """
    from .memory import tracked_peak

    if not ref.ok:
        raise Infeasible(f"the budget is {ref.spec}'s peak, and {ref.spec} did not run: "
                         f"{ref.row['status']}")
    w.zero_grad()
    peak, _, _ = tracked_peak(ref.method.run)
    w.zero_grad()
    return f"{int(peak)}B"


def _one_iteration(w: Workload, m: Method):
    w.zero_grad()
    return m.run()


def run_point(cfg: BenchConfig, log=print) -> tuple[list[dict], int]:
    """Measure every method of ``cfg``; return the rows and the exit code (1 if any error)."""
    if cfg.baseline is not None and cfg.baseline not in cfg.methods:
        raise ValueError(f"baseline {cfg.baseline!r} is not one of the group's methods "
                         f"{list(cfg.methods)}")
    wc = cfg.workload
    checks = check_methods(cfg.methods, cfg.options, wc.seq_len)  # before building anything
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    w = make_workload(wc)
    base = {"model": wc.model, "seq_len": wc.seq_len, "hidden": wc.hidden,
            "input_size": wc.input_size, "classes": wc.classes, "batch": wc.batch,
            "dtype": wc.dtype, "seed": wc.seed, "param_bytes": w.param_bytes()}
    entries: list[_Entry] = []
    for c in checks:
        spec, name, options = c.spec, c.name, dict(c.options)
        cls = get_method(name)
        e = _Entry(name, cls(w, options))
        e.spec, e.options, e.peak_of = spec, options, c.peak_of
        e.row["label"] = spec
        e.row["exact"] = cls.exact
        if cls.uses_budget and options.get("memory") is not None:
            e.row["budget_requested"] = str(options["memory"])
        entries.append(e)

    def healthy():
        return [e for e in entries if e.ok]

    # 1. prepare (methods whose budget is another method's peak after that method)
    by_spec = {e.spec: e for e in entries}
    deferred = []
    for e in entries:
        if e.peak_of is not None:  # resolved by check_methods
            deferred.append((e, by_spec[e.peak_of]))
            continue
        _prepare(e, log)
    for e, ref in deferred:
        try:
            e.method.options["memory"] = _budget_at_peak_of(w, ref)
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            e.fail(exc)
            log(f"[bench] prepared {e.spec}: {e.row['status']} {e.row['message']}")
            continue
        _prepare(e, log)

    # 2. gradient check against `full` on the same batch
    ref = None
    if cfg.grad_check and healthy():
        try:
            ref_m = get_method("full")(w, {})
            ref_m.prepare()
            _one_iteration(w, ref_m)
            ref = w.grads()
            del ref_m
        except Exception as exc:  # noqa: BLE001 - no reference: the methods still run
            note = f"grad check skipped: the reference (full) failed: {_message(exc)}"
            for e in healthy():
                e.row["message"] = (e.row["message"] + " " + note).strip()
            log(f"[bench] {note}")
        w.zero_grad()
        gc.collect()
    if ref is not None:
        for e in healthy():
            try:
                loss = _one_iteration(w, e.method)
                e.row["loss"] = float(loss)
                e.row["grad_error"] = grad_error(w.grads(), ref)
            except Exception as exc:  # noqa: BLE001
                e.fail(exc)
        del ref
        w.zero_grad()
        gc.collect()
        log("[bench] grad errors: " + ", ".join(
            f"{e.spec}={e.row.get('grad_error', float('nan')):.2e}" for e in healthy()))

    # 3. memory pass (tracker; CUDA allocator)
    if cfg.track_memory:
        for e in healthy():
            try:
                w.zero_grad()
                peak, _, _ = tracked_peak(e.method.run)
                e.row["peak_bytes"] = peak
                e.row["grad_bytes"] = sum(p.grad.nbytes for p in w.parameters()
                                          if p.grad is not None)
                if w.device.type == "cuda":
                    w.zero_grad()
                    e.row["cuda_peak_bytes"], _ = cuda_peak(e.method.run, w.device)
            except Exception as exc:  # noqa: BLE001
                e.fail(exc)
            w.zero_grad()
            gc.collect()
        log("[bench] tracked peaks: " + ", ".join(
            f"{e.spec}={e.row.get('peak_bytes', 0) / 2**20:.1f}MiB" for e in healthy()))

    # 4. RSS in fresh processes
    if cfg.rss:
        for e in healthy():
            job = {"workload": wc.to_dict(), "method": e.name, "options": e.method.options,
                   "threads": cfg.threads or torch.get_num_threads()}
            try:
                res = measure_rss(job)
            except Exception as exc:  # noqa: BLE001 - a failed RSS pass is not a failed point
                res = {"status": "error", "message": _message(exc)}
            if res.get("status") == "ok":
                e.row["rss_peak_bytes"] = res["rss_peak_bytes"]
                e.row["rss_baseline_bytes"] = res["rss_baseline_bytes"]
            else:
                e.row["message"] = (e.row["message"] + " rss: " + str(res.get("message"))).strip()
        log("[bench] rss done")

    # 5. timing, interleaved
    live = healthy()
    if live and cfg.repeats > 0:
        try:
            res = time_interleaved({e.spec: e.method.run for e in live}, repeats=cfg.repeats,
                                   warmup=cfg.warmup, device=w.device, before=w.zero_grad)
            for e in live:
                e.row.update(res[e.spec].as_row())
                e.row["time_samples"] = list(res[e.spec].samples)
        except Exception as exc:  # noqa: BLE001 - which one failed is unknown: rerun alone
            for e in live:
                try:
                    r = time_interleaved({e.spec: e.method.run}, repeats=cfg.repeats,
                                         warmup=cfg.warmup, device=w.device, before=w.zero_grad)
                    e.row.update(r[e.spec].as_row())  # alone: no shared rounds, no ratio
                except Exception as exc2:  # noqa: BLE001
                    e.fail(exc2)
            del exc
    w.zero_grad()

    # 6. the group: every row names it and its baseline; per-round ratios to the baseline
    base_spec = cfg.baseline if cfg.baseline is not None else (cfg.methods[0] if cfg.methods
                                                                 else None)
    base_entry = next((e for e in entries if e.spec == base_spec), None)
    base_samples = (base_entry.row.get("time_samples") if base_entry is not None and base_entry.ok
                    else None)
    for e in entries:
        e.row["group"] = cfg.group
        e.row["group_baseline"] = base_spec
        samples = e.row.pop("time_samples", None)
        if e.ok and samples and base_samples:
            e.row.update(ratio_columns(round_ratios(samples, base_samples)))
    if base_entry is not None and base_entry.ok and base_samples is None and cfg.repeats > 0:
        log(f"[bench] baseline {base_spec} has no timing: no ratios")

    rows = []
    for e in entries:
        row = dict(base)
        try:
            row.update({k: v for k, v in e.method.info().items() if v is not None})
        except Exception:  # noqa: BLE001 - info of a method that failed to prepare
            pass
        row.update(e.row)
        rows.append(row)
    code = EXIT_ERROR if any(e.row["status"] == "error" for e in entries) else EXIT_OK
    return rows, code
