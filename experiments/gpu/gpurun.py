"""The GPU run of a pipeline config without Snakemake, and its expected time per card.

    python3 experiments/gpu/gpurun.py plan [--config C]                # the groups, in run order
    python3 experiments/gpu/gpurun.py run --out DIR [--config C] [--deadline-s S]
    python3 experiments/gpu/gpurun.py estimate [--config C] [CARD_DIR ...]

``run`` measures every comparison group of the config (``experiments/config/gpu.yaml`` by
default) with the same ``membptt bench`` command the pipeline's ``bench_group`` rule runs (both
build the groups with ``experiments/targets.py``), one process per group, one group at a time,
and writes a card folder that the GPU report reads (``experiments/rules/gpu.smk``):

    DIR/card.yaml            what the report reads: card name, planned groups, where things are
    DIR/config.yaml          the resolved config the run used
    DIR/groups/<group>.csv   one per group that finished (written atomically by membptt bench)
    DIR/logs/<group>.log     the group's output
    DIR/times/<group>.times  start, end (UTC) and exit status of the group's process

A group that would not finish before ``--deadline-s`` (counted from the start of ``run``) is
stopped there, or not started when less than a minute is left, so the run always ends in time
to pack its results; such a group has no CSV and the report shows it as not measured.

``estimate`` prices every group of the config on each card from that card's committed groups
only (never another card's): per method, the time of one iteration measured there (same label
in the same group; else the same label at the card's nearest measured length of the same
family, scaled by the paper's unit-cost model C + 2T; else the slowest measured variant of the
same method in the group), times the passes a group makes (gradient check, the memory passes,
warm-up and timed rounds), plus the card's fixed cost per group; the fixed cost and the factor
on the passes are fitted (least squares) to the card's measured wall times per group.

Needs only the Python standard library, PyYAML and membptt (``estimate`` also pandas): the
GPU image has no Snakemake. The config is resolved as the Snakefile resolves it: the given
file merged over ``experiments/config/default.yaml``, then the defaults of
``experiments/config/schema.yaml`` (tests/test_gpu_report.py checks this against Snakemake's
own validation).
"""

from __future__ import annotations

import argparse
import copy
import math
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import targets  # noqa: E402

DEFAULT_CONFIG = ROOT / "experiments" / "config" / "gpu.yaml"


# -- the config, resolved as the Snakefile resolves it -------------------------------------

def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``, dictionaries key by key (Snakemake's
    ``update_config``); any other value of ``over`` replaces ``base``'s."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve_ref(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def fill_defaults(schema: dict, inst, root: dict | None = None):
    """Fill ``inst`` with the schema's defaults, in place, as ``snakemake.utils.validate``
    does: a missing property with a default gets it, then every object is filled in turn."""
    root = schema if root is None else root
    schema = _resolve_ref(schema, root)
    if not isinstance(inst, dict):
        return inst
    props = schema.get("properties", {})
    for key, sub in props.items():
        sub = _resolve_ref(sub, root)
        if key not in inst and "default" in sub:
            inst[key] = copy.deepcopy(sub["default"])
        if key in inst:
            fill_defaults(sub, inst[key], root)
    return inst


def resolve_config(path: Path | str = DEFAULT_CONFIG) -> dict:
    cfg_dir = ROOT / "experiments" / "config"
    base = yaml.safe_load((cfg_dir / "default.yaml").read_text())
    cfg = deep_merge(base, yaml.safe_load(Path(path).read_text()) or {})
    return fill_defaults(yaml.safe_load((cfg_dir / "schema.yaml").read_text()), cfg)


def run_order(cfg: dict) -> dict:
    """The config's groups in the order the GPU run measures them: the trade-off group (the
    headline and the front) first, then Fig. 2b from the longest length (the one a short
    window has missed before) down, then the rest: a run cut at its deadline loses the
    shortest Fig. 2b lengths first."""
    groups = {**targets.measured_groups(cfg["measured"]),
              **targets.reversible_groups(cfg["measured"])}

    def key(name):
        g = groups[name]
        family = 0 if name.startswith("tradeoff_") else 1 if name.startswith("fig2b_") else 2
        return (family, -g["seq_len"] if family == 1 else g["seq_len"], name)

    return {name: groups[name] for name in sorted(groups, key=key)}


# -- run -----------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_plan(args) -> int:
    cfg = resolve_config(args.config)
    for name, g in run_order(cfg).items():
        print(name, " ".join(["membptt", *targets.bench_command(name, g)]))
    return 0


def cmd_run(args) -> int:
    t0 = time.monotonic()
    cfg = resolve_config(args.config)
    groups = run_order(cfg)
    out = Path(args.out)
    for sub in ("groups", "logs", "times"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    record = {"card": args.card_name, "groups": "groups", "planned": list(groups),
              "wall_times": ["times"], "device": "DEVICE.txt", "cuda_tests": "cuda_tests.log",
              "config": "config.yaml", "config_source": str(args.config)}
    (out / "card.yaml").write_text(
        "# Written by experiments/gpu/gpurun.py run; read by the GPU report "
        "(experiments/rules/gpu.smk)\n" + yaml.safe_dump(record, sort_keys=False))
    failed = 0
    for name, g in groups.items():
        left = args.deadline_s - (time.monotonic() - t0)
        times = out / "times" / f"{name}.times"
        if left < args.min_group_s:
            times.write_text(f"start -\nend   -\nrc    skipped ({left:.0f} s left of the "
                             f"{args.deadline_s:.0f} s deadline)\n")
            print(f"[gpurun] {name}: skipped, {left:.0f} s left", flush=True)
            failed += 1
            continue
        cmd = [sys.executable, "-m", "membptt.cli", *targets.bench_command(name, g),
               "--out", str(out / "groups" / f"{name}.csv")]
        start = _now()
        s0 = time.monotonic()
        print(f"[gpurun] {start} {name}: {len(g['methods'])} methods, T = {g['seq_len']}, "
              f"at most {left:.0f} s", flush=True)
        with open(out / "logs" / f"{name}.log", "w") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=left).returncode
            except subprocess.TimeoutExpired:
                rc = f"timeout (stopped at the {args.deadline_s:.0f} s deadline)"
        times.write_text(f"start {start}\nend   {_now()}\nrc    {rc}\n")
        print(f"[gpurun] {name}: rc {rc}, {time.monotonic() - s0:.1f} s", flush=True)
        failed += rc != 0
    print(f"[gpurun] {len(groups) - failed}/{len(groups)} groups finished in "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    return 1 if failed else 0


# -- a card's committed run ------------------------------------------------------------------

def load_card(folder: Path | str) -> dict:
    """The card record (card.yaml) with paths made absolute-or-relative to the working dir."""
    folder = Path(folder)
    rec = yaml.safe_load((folder / "card.yaml").read_text())
    rec["folder"] = folder
    gdir = folder / rec["groups"]
    rec["csvs"] = {p.stem: p for p in sorted(gdir.glob("*.csv"))}
    rec["planned"] = list(rec.get("planned", []))
    return rec


def wall_times(rec: dict) -> dict:
    """{group: wall seconds} from the card's Snakemake benchmark TSVs (column ``s``) and its
    ``<group>.times`` files (start and end, UTC)."""
    walls = {}
    for sub in rec.get("wall_times", []):
        d = Path(rec["folder"]) / sub
        for p in sorted(d.glob("*.tsv")):
            lines = p.read_text().splitlines()
            if len(lines) >= 2:
                walls[p.stem] = float(lines[-1].split("\t")[0])
        for p in sorted(d.glob("*.times")):
            f = dict(line.split(None, 1) for line in p.read_text().splitlines() if " " in line)
            try:
                a, b = (datetime.fromisoformat(f[k].strip().replace("Z", "+00:00"))
                        for k in ("start", "end"))
            except (KeyError, ValueError):
                continue
            if f.get("rc", "").strip() == "0":
                walls[p.stem] = (b - a).total_seconds()
    return walls


# -- estimate --------------------------------------------------------------------------------

def _passes(workload_or_row) -> int:
    """Iterations per method of one group: gradient check, tracked memory pass (and the CUDA
    allocator's pass on a GPU), warm-up and timed rounds (membptt.measure.bench.run_point)."""
    w = workload_or_row
    return int(w["grad_check"]) + 2 + int(w["warmup"]) + int(w["repeats"])


def _row_passes(rows) -> int:
    r = rows.iloc[0]
    return _passes({"grad_check": "--no-grad-check" not in str(r.command), "warmup": r.warmup,
                    "repeats": r.repeats})


def _method_time(label: str, name: str, T: int, card_rows: dict):
    """Seconds per iteration of ``label`` in group ``name`` on this card, and how it was
    priced; None when the card measured nothing to price it with."""
    from membptt.planning import dp

    rows = card_rows.get(name)
    if rows is not None:
        hit = rows[rows.label == label]
        if len(hit):
            r = hit.iloc[0]
            return (float(r.time_median_s), "measured") if r.status == "ok" else (0.0, r.status)
    family = name.split("_T")[0]
    same = []
    for other, d in card_rows.items():
        if other.split("_T")[0] == family and other != name:
            hit = d[(d.label == label) & (d.status == "ok")]
            if len(hit):
                same.append((abs(math.log(hit.iloc[0].seq_len / T)), hit.iloc[0]))
    if same:
        r = min(same, key=lambda x: x[0])[1]
        L = int(r.seq_len)
        if r.method == "hsm":
            m = int(r.budget_requested)
            scale = (dp.c_hsm_closed(T, m) + 2 * T) / (dp.c_hsm_closed(L, m) + 2 * L)
        else:
            scale = T / L
        return float(r.time_median_s) * scale, f"scaled from T = {L} by (C + 2T)"
    if rows is not None:
        method = label.split(":")[0]
        sib = rows[(rows.method == method) & (rows.status == "ok")]
        if len(sib):
            k = _segments(label, T)
            if k is not None:  # a checkpoint at another K: the measured K nearest to it
                dist = [abs(math.log(_segments(lab, T) / k)) for lab in sib.label]
                near = sib[[d == min(dist) for d in dist]]
                return (float(near.time_median_s.max()),
                        f"priced as K = {_segments(near.iloc[0].label, T)} (nearest measured)")
            return float(sib.time_median_s.max()), "priced as its slowest measured variant"
    return None


def _segments(label: str, T: int):
    """K of a checkpoint label (round(sqrt(T)) when it names none), None for other methods."""
    if not label.startswith("torch-checkpoint"):
        return None
    for part in label.split(":")[1:]:
        if part.startswith("segments="):
            return int(part.split("=", 1)[1])
    return max(1, round(T ** 0.5))


def fit_card(rec: dict, card_rows: dict) -> dict | None:
    """Fixed seconds per group and the factor on passes x per-iteration time, least squares
    over the card's groups with a measured wall time."""
    walls = wall_times(rec)
    pts = []
    for name, d in card_rows.items():
        if name in walls:
            ok = d[d.status == "ok"]
            pts.append((name, _row_passes(d) * float(ok.time_median_s.sum()), walls[name]))
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(p[1] for p in pts) / n
    my = sum(p[2] for p in pts) / n
    sxx = sum((p[1] - mx) ** 2 for p in pts)
    c = sum((p[1] - mx) * (p[2] - my) for p in pts) / sxx
    o = my - c * mx
    resid = max(abs(o + c * p[1] - p[2]) / p[2] for p in pts)
    return {"fixed_s": o, "factor": c, "points": n, "max_rel_error": resid,
            "groups": [p[0] for p in pts]}


def estimate_card(cfg: dict, folder) -> dict:
    """Expected wall seconds of every group of ``cfg`` on the card in ``folder``."""
    import pandas as pd

    rec = load_card(folder)
    card_rows = {name: pd.read_csv(p, dtype={"budget_requested": str, "label": str})
                 for name, p in rec["csvs"].items()}
    fit = fit_card(rec, card_rows)
    out = {"card": rec.get("card"), "fit": fit, "groups": []}
    passes = _passes(cfg["measured"]["workload"])
    for name, g in run_order(cfg).items():
        per, notes, missing = 0.0, {}, []
        for label in g["methods"]:
            t = _method_time(label, name, g["seq_len"], card_rows)
            if t is None:
                missing.append(label)
                continue
            per += t[0]
            if t[1] != "measured":
                notes[label] = t[1]
        seconds = None if fit is None else fit["fixed_s"] + fit["factor"] * passes * per
        out["groups"].append({"group": name, "methods": len(g["methods"]),
                              "per_iteration_s": per, "passes": passes, "seconds": seconds,
                              "priced": notes, "unpriced": missing,
                              "measured_here": name in card_rows})
    known = [g["seconds"] for g in out["groups"] if g["seconds"] is not None]
    out["total_s"] = sum(known) if fit is not None else None
    return out


def cmd_estimate(args) -> int:
    cfg = resolve_config(args.config)
    cards = args.cards or [ROOT / d for d in cfg.get("cards", {}).values()]
    for folder in cards:
        est = estimate_card(cfg, folder)
        fit = est["fit"]
        print(f"== {est['card']} ({folder})")
        if fit is None:
            print("   fewer than two groups with a wall time: no estimate")
            continue
        print(f"   fit over {fit['points']} groups: {fit['fixed_s']:.1f} s per group + "
              f"{fit['factor']:.2f} x passes x seconds per iteration (largest error "
              f"{100 * fit['max_rel_error']:.0f} %)")
        for g in est["groups"]:
            extra = "; ".join(f"{k}: {v}" for k, v in g["priced"].items())
            if g["unpriced"]:
                extra += f"; NOT PRICED (nothing measured here): {', '.join(g['unpriced'])}"
            print(f"   {g['group']:<28} {g['seconds']:7.0f} s  ({g['methods']} methods, "
                  f"{g['per_iteration_s']:.2f} s per iteration x {g['passes']} passes)"
                  + (f"  [{extra.strip('; ')}]" if extra else ""))
        print(f"   groups in all: {est['total_s']:.0f} s (estimate)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gpurun", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("plan", "run", "estimate"):
        s = sub.add_parser(name)
        s.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        if name == "run":
            s.add_argument("--out", required=True, help="the card folder to write")
            s.add_argument("--card-name", default="unknown", help="as nvidia-smi -L names it")
            s.add_argument("--deadline-s", type=float, default=400.0,
                           help="stop measuring this many seconds after the start")
            s.add_argument("--min-group-s", type=float, default=60.0,
                           help="start no group with less time than this left")
        if name == "estimate":
            s.add_argument("cards", nargs="*", type=Path,
                           help="card folders (default: the config's cards)")
    args = p.parse_args(argv)
    if hasattr(args, "deadline_s") and not (math.isfinite(args.deadline_s)
                                            and args.deadline_s > 0):
        p.error(f"--deadline-s must be a positive number of seconds, got {args.deadline_s}")
    return {"plan": cmd_plan, "run": cmd_run, "estimate": cmd_estimate}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
