"""Regression tests of issue 11 (hardening): every bad input found in the break-it sweep is a
clear error (``ValueError`` from the API, one line ``membptt: error: ...`` and exit 2 from the
CLI) or completes correctly; sizes are refused before they are allocated; outputs never replace
special files.
"""

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import membptt
from membptt.cli import main
from membptt.planning import dp, limits
from membptt.planning.limits import PlanTooLarge

SRC = str(Path(__file__).resolve().parent.parent / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("membptt: error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- 1. integers >= 2^63 and huge floats never reach the compiled core ---------------------------

def test_huge_alpha_completes_and_equals_hsm():
    """alpha=10**30 used to wrap in the core's C long (segfault); with alpha above the budget no
    internal state fits, so MSM is HSM. Run in a subprocess: a crash must fail, not kill, pytest."""
    code = ("import membptt; a = membptt.plan('msm', 10, 10, alpha=10**30); "
            "b = membptt.plan('msm', 10, 10, alpha=1e19); h = membptt.plan('hsm', 10, 10); "
            "assert a.ops == b.ops == h.ops, (a, h); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_cli_alpha_1e19_completes():
    r = subprocess.run([sys.executable, "-m", "membptt.cli", "plan", "--strategy", "msm",
                        "--seq-len", "10", "--memory", "10", "--alpha", "1e19", "--json"],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["forward_ops"] == membptt.plan("hsm", 10, 10).forward_ops


def _same_as_hsm(alpha, beta):
    got = dp.solve(30, 12, dp.msm_family(alpha, beta))
    ref = dp.solve(30, 12, dp.hsm_family())
    return np.array_equal(got.C, ref.C) and np.array_equal(got.kind, ref.kind)


def test_sizes_above_the_budget_clamp_exactly():
    """Internal states larger than M units never fit: the table equals HSM's, whatever their
    size (sizes >= 2^63 in a subprocess: a crash must fail, not kill, pytest)."""
    assert _same_as_hsm(13, 13) and _same_as_hsm(1000, 999)
    code = ("from tests.test_hardening import _same_as_hsm as s; "
            "assert s(10**30, 10**25) and s(2**63, 2**64); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                       timeout=120, cwd=str(Path(SRC).parent))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_costs_file_with_a_size_beyond_int64(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"hidden_bytes": 8, "internal_bytes": 10**19}))
    r = subprocess.run([sys.executable, "-m", "membptt.cli", "plan", "--strategy", "msm",
                        "--seq-len", "10", "--memory", "10", "--costs", str(path)],
                       env=ENV, capture_output=True, text=True, timeout=120)
    line = _one_line_error(r.returncode, r.stderr)
    assert "internal_bytes" in line and "2**63" in line


@pytest.mark.parametrize("field", ["hidden_bytes", "internal_bytes", "beta_bytes", "run_fixed",
                                   "backward"])
def test_costmodel_refuses_bools(field):
    kw = {"hidden_bytes": 8, "internal_bytes": 40, field: True}
    with pytest.raises(ValueError, match=field):
        membptt.CostModel(**kw)


# -- 5. overflow and absurd budgets in `membptt plan` ------------------------------------------

@pytest.mark.parametrize("args,expect", [
    (["--memory", "1e400%", "--alpha", "2"], "not a finite number"),
    (["--memory", "1e400MiB", "--costs", "COSTS"], "not a finite number"),
    (["--memory", "5%", "--alpha", "1e100"], "would need"),
    (["--memory", "5%", "--alpha", "1e9"], "would need"),
    (["--memory", "0%", "--alpha", "2"], "must be positive"),
    (["--memory", "5", "--alpha", "2", "--max-ops", "0"], "max_ops"),
    (["--memory", "5", "--alpha", "2", "--max-table-mib", "nan"], "--max-table-mib"),
])
def test_plan_cli_overflows_are_one_line_errors(tmp_path, capsys, args, expect):
    costs = tmp_path / "c.json"
    costs.write_text(json.dumps({"hidden_bytes": 8, "internal_bytes": 40}))
    args = [str(costs) if a == "COSTS" else a for a in args]
    code, _, err = _cli(["plan", "--strategy", "msm", "--seq-len", "10", *args], capsys)
    assert expect in _one_line_error(code, err)


# -- 4. memory blow-ups are refused before allocating ---------------------------------------

def test_generous_hsm_budget_is_refused_with_what_it_needs():
    """T = M = 10^5 asked numpy for 74.5 GiB; now a PlanTooLarge naming the size and a fix."""
    with pytest.raises(PlanTooLarge) as e:
        membptt.plan("hsm", 100_000, 100_000)
    msg = str(e.value)
    assert "GiB" in msg and "max_table_bytes" in msg and "at most 126 units fits" in msg
    membptt.plan("hsm", 2000, 126)  # a fitting budget (of the same length) runs


def test_table_limit_names_a_budget_that_fits():
    dp.clear_cache()  # (a cached table that covers the plan needs no allocation: no refusal)
    limit = 10**6
    T = 1000
    fit = limit // ((T + 1) * limits.TABLE_CELL_BYTES) - 1
    with pytest.raises(PlanTooLarge, match=f"at most {fit} units fits"):
        membptt.plan("msm", T, fit + 1, alpha=5, max_table_bytes=limit)
    p = membptt.plan("msm", T, fit, alpha=5, max_table_bytes=limit)
    assert p.memory == fit


def test_budget_beyond_the_cap_costs_no_more_than_the_cap():
    dp.clear_cache()
    tab = dp.table(200, 10**40, dp.hsm_family())
    assert tab.M == dp.hsm_family().cap(200)
    assert membptt.plan("hsm", 200, 10**40).ops == membptt.plan("hsm", 200, 200).ops


@pytest.mark.parametrize("strategy,memory,kw", [
    ("full", None, {"alpha": 2}), ("recompute-all", None, {}), ("chen", None, {"alpha": 3}),
    ("chen", 30, {"alpha": 3}), ("chen-recursive", None, {}), ("chen-recursive", 9, {}),
    ("hsm", 6, {}), ("ism", 12, {"alpha": 3}), ("msm", 12, {"alpha": 3}),
    ("msm", 12, {"costs": membptt.CostModel(run_fixed=0.5, run_per_step=1.0,
                                            forward_graph=1.5)}),
])
def test_op_limit_is_exact(strategy, memory, kw):
    """max_ops = len(ops) plans; one fewer is refused (and under unit costs, before the DP)."""
    kw = dict(kw)
    if "costs" in kw:
        kw["alpha"] = 3
    p = membptt.plan(strategy, 60, memory, **kw)
    assert membptt.plan(strategy, 60, memory, max_ops=len(p.ops), **kw).ops == p.ops
    with pytest.raises(PlanTooLarge, match="max_ops"):
        membptt.plan(strategy, 60, memory, max_ops=len(p.ops) - 1, **kw)


def test_too_many_ops_are_refused_before_building_them():
    with pytest.raises(PlanTooLarge, match="4,504,500 ops"):  # T(T+1)/2 forwards + T backwards
        membptt.plan("recompute-all", 3000)
    with pytest.raises(PlanTooLarge, match="500,001,500,000 ops"):
        membptt.plan("recompute-all", 10**6, max_ops=10**11)


def test_msm_forward_count_is_bounded_below_by_ism():
    """The refusal before the DP uses C_MSM(t, m) >= C_ISM(t, m) under unit costs."""
    for a, b in [(1, 1), (2, 1), (2, 2), (3, 2), (5, 4), (7, 1)]:
        tab = dp.solve(60, 80, dp.msm_family(a, b))
        for t in range(1, 61):
            for m in range(1, 81):
                assert tab.cost(t, m) >= dp.c_ism_closed(t, min(m, t + 1)), (a, b, t, m)


def test_table_cache_is_bounded_by_bytes(monkeypatch):
    dp.clear_cache()
    one = dp.solve(300, 30, dp.hsm_family()).nbytes
    monkeypatch.setattr(dp, "CACHE_MAX_BYTES", int(2.5 * one))
    for k in range(6):  # six different time costs: six tables
        costs = membptt.CostModel(run_fixed=0.1 * k)
        dp.table(300, 30, dp.hsm_family(), costs)
        assert dp.cache_bytes() <= dp.CACHE_MAX_BYTES
    assert len(dp._CACHE) == 2
    last = (dp.hsm_family(), membptt.CostModel(run_fixed=0.5).time_key())
    assert last in dp._CACHE  # the most recent survives
    dp.clear_cache()


def test_solve_without_a_limit_and_with_one():
    """dp.solve (a low-level call) has no default limit; dp.table and plan() do."""
    assert dp.solve(50, 40, dp.hsm_family(), max_bytes=10**6).T == 50
    with pytest.raises(PlanTooLarge):
        dp.solve(5000, 400, dp.hsm_family(), max_bytes=10**6)
    with pytest.raises(ValueError, match="max_table_bytes"):
        membptt.plan("hsm", 10, 3, max_table_bytes=0)


def test_dp_work_limit_abandons_a_long_table_deterministically():
    """The DP counts its work (evaluations, search intervals, cells): a table above max_dp_work
    is abandoned with a PlanTooLarge naming the limit and the ways out; the count does not
    depend on the machine, so the same table is refused at any limit below its work and built
    at any limit at or above it."""
    dp.clear_cache()
    fam = dp.msm_family(2, 2)
    tab = dp.solve(3000, 20, fam)
    assert tab.work >= tab.evals + 3000 * 20  # every cell counts
    assert dp.solve(3000, 20, fam, max_work=tab.work).work == tab.work
    with pytest.raises(PlanTooLarge) as e:
        dp.solve(3000, 20, fam, max_work=tab.work - 1)
    msg = str(e.value)
    assert "max_dp_work" in msg and "--max-dp-work" in msg and f"{tab.work - 1:,}" in msg
    with pytest.raises(PlanTooLarge, match="max_dp_work"):
        membptt.plan("msm", 3000, 20, alpha=2, max_dp_work=tab.work - 1)
    assert membptt.plan("msm", 3000, 20, alpha=2, max_dp_work=tab.work).memory == 20
    with pytest.raises(ValueError, match="max_dp_work"):
        membptt.plan("msm", 3000, 20, alpha=2, max_dp_work=0)
    dp.clear_cache()


def test_dp_work_limit_numpy_backend():
    fam = dp.hsm_family()
    tab = dp.solve(200, 6, fam, use="numpy")
    with pytest.raises(PlanTooLarge, match="max_dp_work"):
        dp.solve(200, 6, fam, use="numpy", max_work=tab.work // 2)


def test_cached_table_grows_only_within_the_work_limit():
    """A cached table is grown to cover a new request only when the grown table fits the work
    limit; otherwise the request alone is solved (and answered)."""
    dp.clear_cache()
    fam = dp.hsm_family()
    small = dp.table(400, 30, fam)
    alone = dp.solve(2000, 5, fam)
    grown = dp.solve(2000, 30, fam)
    assert grown.work > alone.work
    tab = dp.table(2000, 5, fam, max_work=alone.work)
    assert (tab.T, tab.M) == (2000, 5) and small.T == 400
    dp.clear_cache()


@pytest.mark.parametrize("args", [
    ["--strategy", "msm", "--seq-len", "200000", "--memory", "60", "--alpha", "2"],
    ["--strategy", "hsm", "--seq-len", "100000", "--memory", "100"],
])
def test_slow_tables_are_refused_by_the_work_limit(capsys, args):
    """These took 9.8 s and 15 s of CPU (issue 11); now the work limit refuses them after
    4 x 10^8 units (about 3 s here), with a one-line error."""
    code, _, err = _cli(["plan", *args], capsys)
    msg = _one_line_error(code, err)
    assert "work units" in msg and "--max-dp-work" in msg


# -- 7. API misuse -------------------------------------------------------------------------------

def test_misspelt_keyword_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="alpah") as e:
        membptt.plan("msm", 100, 20, alpah=5)
    assert "alpha" in str(e.value).split("valid:")[1]
    with pytest.raises(ValueError, match="segments"):
        membptt.plan("hsm", 10, 4, segments=3)


def test_strategy_options_are_used():
    assert membptt.plan("chen", 100, alpha=2, segments=5).info["segments"] == 5
    assert membptt.plan("chen-recursive", 100, branching=3).info["branching"] == 3
    with pytest.raises(ValueError, match=r"segments must be an integer in \[1, 100\]"):
        membptt.plan("chen", 100, alpha=2, segments=0)
    with pytest.raises(ValueError, match="above the budget"):
        membptt.plan("chen", 100, 40, alpha=2, segments=2)


@pytest.mark.parametrize("bad", [None, "hsm", [1, 2]])
def test_simulate_refuses_what_is_not_a_plan(bad):
    with pytest.raises(ValueError, match="membptt.Plan"):
        membptt.simulate(bad)


def test_dir_lists_the_lazy_names():
    assert {"bptt", "probe", "models", "plan"} <= set(dir(membptt))


def test_ops_into_a_closed_pipe_is_quiet():
    p = subprocess.Popen([sys.executable, "-m", "membptt.cli", "plan", "--strategy", "hsm",
                          "--seq-len", "3000", "--memory", "3", "--ops"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(10)
    p.stdout.close()  # what `| head` does
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141
    assert "Traceback" not in err and err == ""


# -- 2. and 5. `membptt bench`: arguments and output paths checked before measuring ----------------

SMALL = ["--seq-len", "6", "--hidden", "4", "--batch", "2", "--input-size", "3", "--classes",
         "3", "--repeats", "1", "--warmup", "0", "--no-rss", "-q"]


def _bench_args(argv):
    from membptt.measure.cli import add_bench_parser

    p = argparse.ArgumentParser()
    add_bench_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["bench", *argv])


@pytest.fixture
def no_measuring(monkeypatch):
    from membptt.measure import bench

    def fail(*a, **k):
        raise AssertionError("measured before the arguments were checked")

    monkeypatch.setattr(bench, "run_point", fail)


@pytest.mark.parametrize("argv,expect", [
    (["--method", "full", "--device", "tpu"], "--device 'tpu'"),
    (["--method", "full", "--device", ""], "--device ''"),
    (["--method", "full", "--device", "meta"], "cpu or cuda"),
    (["--method", "msm", "--memory", "0%"], "must be positive"),
    (["--method", "msm"], "needs --memory"),
    (["--method", "msm", "--memory", "5", "--alpha", "0"], "--alpha"),
    (["--method", "msm", "--memory", "5", "--alpha", "3", "--beta", "4"], "--beta"),
    (["--method", "full", "--threads", "-1"], "--threads"),
    (["--method", "torch-checkpoint", "--segments", "-3"], "--segments"),
    (["--method", "hsm", "--memory", "5", "--seq-len", "1"], "--seq-len must be >= 3"),
    (["--method", "msm", "--memory", "1e400%"], "--memory"),
])
def test_bench_user_mistakes_are_one_line_errors(capsys, no_measuring, argv, expect):
    from membptt.measure.cli import run_bench

    code = run_bench(_bench_args([*SMALL, *argv]))
    assert expect in _one_line_error(code, capsys.readouterr().err)


def _private_null(path: Path) -> Path:
    """A character device like /dev/null, made in a temporary directory (needs CAP_MKNOD).

    The tests never aim writes at the real /dev/null: run against the unfixed code (as root),
    they would replace it for the whole machine, which is the bug under test."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (OSError, AttributeError) as e:
        pytest.skip(f"cannot create a device node here: {e}")
    return path


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "proc", "empty"])
def test_bench_refuses_special_outputs_before_measuring(tmp_path, capsys, no_measuring, kind):
    from membptt.measure.cli import run_bench

    target = {"fifo": tmp_path / "p", "device": tmp_path / "null", "directory": tmp_path,
              "proc": Path("/proc/membptt-x"), "empty": ""}[kind]
    if kind == "fifo":
        os.mkfifo(target)
    if kind == "device":
        _private_null(target)
    code = run_bench(_bench_args(["--method", "full", *SMALL, "--out", str(target)]))
    _one_line_error(code, capsys.readouterr().err)
    if kind == "fifo":
        assert stat.S_ISFIFO(os.stat(target).st_mode)  # still a FIFO
    if kind == "device":
        assert stat.S_ISCHR(os.stat(target).st_mode)  # still a device


def test_dev_null_is_refused_without_writing():
    from membptt.measure.results import check_output_path

    with pytest.raises(ValueError, match="character device"):
        check_output_path(os.devnull)  # a check only: nothing is written


def test_write_rows_never_replaces_a_fifo(tmp_path):
    from membptt.measure.results import write_rows

    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        write_rows(fifo, [{"method": "full"}])
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["p"]  # no temporary left


def test_outputs_are_readable_with_the_usual_umask(tmp_path):
    from membptt.measure.results import read_rows, write_rows

    old = os.umask(0o022)
    try:
        new = write_rows(tmp_path / "a.csv", [{"method": "full"}])
        assert stat.S_IMODE(os.stat(new).st_mode) == 0o644
        os.chmod(new, 0o640)  # an existing file keeps its mode
        write_rows(new, [{"method": "msm"}])
        assert stat.S_IMODE(os.stat(new).st_mode) == 0o640
        assert read_rows(new)[0]["method"] == "msm"
        link = tmp_path / "link.csv"  # a link is followed: the link stays, its target changes
        link.symlink_to(new)
        write_rows(link, [{"method": "hsm"}])
        assert link.is_symlink() and read_rows(new)[0]["method"] == "hsm"
    finally:
        os.umask(old)


# -- 7. the RSS child dies with `bench` ----------------------------------------------------------

def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists() or sys.platform != "linux",
                    reason="Linux /proc needed")
def test_rss_child_dies_with_a_killed_parent():
    job = {"workload": {"seq_len": 200_000, "hidden": 4, "batch": 1, "input_size": 3,
                        "classes": 3}, "method": "full", "options": {}}
    code = ("import json, sys; from membptt.measure.rss import measure_rss; "
            f"measure_rss(json.loads({json.dumps(json.dumps(job))}))")
    parent = subprocess.Popen([sys.executable, "-c", code], env=ENV)
    try:
        deadline = time.monotonic() + 60
        kids = []
        while not kids and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.05)
            kids = _children(parent.pid)
        assert kids, "the RSS child never started"
        time.sleep(1.0)  # let it arm the death signal (if not, it sees the orphaning itself)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    child = kids[0]
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the RSS child outlived its killed parent"


# == issue 23 (hardening, round 2) ===============================================================
# `SMALL` of the issue: every check below runs before the workload is built (exit 2, one line),
# a failed final write loses nothing (exit 3), and `membptt plan --json` is strict JSON.

SMALL23 = ["--seq-len", "8", "--hidden", "4", "--batch", "2", "--input-size", "3", "--classes",
           "3", "--repeats", "3", "--warmup", "0", "--no-rss", "--threads", "1", "-q"]


@pytest.fixture
def nothing_built(monkeypatch):
    """Fail the test if a workload is built or a point measured (the checks come first)."""
    from membptt.measure import bench

    def fail(*a, **k):
        raise AssertionError("the workload was built before the arguments were checked")

    monkeypatch.setattr(bench, "run_point", fail)
    monkeypatch.setattr(bench, "make_workload", fail)


@pytest.fixture
def good_csv(tmp_path):
    from membptt.measure.results import write_rows

    path = tmp_path / "eq.csv"
    write_rows(path, [{"method": "full", "label": "full", "status": "ok", "time_median_s": 1.0}])
    return path


@pytest.mark.parametrize("methods,expect", [
    # peak() references: a typo, the method itself, a reference to a method whose budget is
    # itself a peak() reference, unbalanced parentheses
    ("full,msm:memory=peak(ful)", "needs 'ful' among the group's methods (did you mean 'full'?)"),
    ("full,msm:memory=peak(msm:memory=peak(full))", "needs 'msm:memory=peak(full)'"),
    ("full,msm:memory=peak(full),hsm:memory=peak(msm:memory=peak(full))",
     "whose budget is itself a peak() reference"),
    ("full,msm:memory=peak(full))", "unbalanced parentheses"),
    ("full,msm:memory=peak(full", "unbalanced parentheses"),
    # options prepare() refused after measuring
    ("full,torch-checkpoint:segments=0", "segments must be an integer from 1 to the sequence "
                                         "length 8, got 0"),
    ("full,torch-checkpoint-fused:segments=9", "got 9"),
    ("full,msm:memory=5:alpha=nan", "alpha must be a finite number >= 1"),
    ("full,msm:memory=5:alpha=inf", "alpha must be a finite number >= 1"),
    ("full,msm:memory=5:alpha=0.5", "alpha must be a finite number >= 1"),
    ("full,msm:memory=5:beta=nan", "beta must be a finite number >= 1"),
    ("full,msm:memory=5:alpha=2:beta=4", "beta must be <= alpha"),
    ("full,msm:memory=5:block=4", "use msm-measured"),
    ("full,hsm:memory=5:planner=blocks", "use hsm-measured"),
    ("full,msm-measured:memory=5:block=0", "an integer block length >= 1"),
    ("full,chen-measured:memory=5:planner=chains", "planner 'chains' does not apply"),
    ("full,chen-measured:memory=5:block=4", "does not apply to strategy 'chen'"),
    # options that were silently ignored
    ("full,full:segments=4", "option segments=4 is not used by method 'full'"),
    ("full,chen:segments=3", "option segments=3 is not used by method 'chen'"),
    ("full,torch-checkpoint:memory=5", "option memory='5' is not used by method"),
    ("full,full-plan:memory=5", "is not used by method 'full-plan'"),
    # a spec given twice: one timing copied into two rows
    ("full,full", "method 'full' is given twice"),
    ("full,msm:memory=5,msm:memory=5", "method 'msm:memory=5' is given twice"),
])
def test_bench_specs_are_checked_before_the_workload(capsys, nothing_built, good_csv, methods,
                                                     expect):
    """Issue 23, findings 1 and 3: these were measured first and then replaced --out with
    error rows (exit 1), or (full,full) wrote one timing twice."""
    from membptt.measure.cli import run_bench

    before = good_csv.read_bytes()
    code = run_bench(_bench_args(["--method", methods, *SMALL23, "--out", str(good_csv)]))
    line = _one_line_error(code, capsys.readouterr().err)
    assert expect in line, line
    assert good_csv.read_bytes() == before  # the good CSV is untouched


@pytest.mark.parametrize("argv,expect", [
    (["--method", "full,reversible", "--model", "rev-gru", "--hidden", "3"],
     "--model rev-gru with hidden=3"),
    (["--method", "full", "--seq-len", "1000000000", "--batch", "64"], "above this machine's"),
])
def test_bench_workload_sizes_are_checked_before_building(capsys, nothing_built, argv, expect):
    from membptt.measure.cli import run_bench

    code = run_bench(_bench_args([*SMALL23, *argv]))
    assert expect in _one_line_error(code, capsys.readouterr().err)


@pytest.mark.parametrize("argv,expect", [
    (["--method", "full,full-fused", "--segments", "4"], "--segments 4 is used by the "
                                                         "torch-checkpoint* methods"),
    (["--method", "full,torch-checkpoint", "--memory", "5%"], "--memory '5%' is used by"),
    (["--method", "full,full-plan", "--memory", "5"], "other than full-plan"),
    (["--method", "full", "--alpha", "3"], "--alpha 3.0 is used by the plan methods"),
])
def test_bench_options_no_method_uses_are_refused(capsys, nothing_built, argv, expect):
    """Issue 23, finding 14: command options that no method of the group uses were silently
    ignored (a typo'd method list measured something else than asked)."""
    from membptt.measure.cli import run_bench

    code = run_bench(_bench_args([*SMALL23, *argv]))
    assert expect in _one_line_error(code, capsys.readouterr().err)


def test_a_point_that_fails_whole_keeps_the_old_csv_and_speaks_under_q(monkeypatch, capsys,
                                                                        good_csv):
    """Issue 23, finding 1: a failure of the whole point replaced a good --out with error rows
    and printed nothing under -q."""
    from membptt.measure import bench
    from membptt.measure.cli import run_bench
    from membptt.measure.results import read_rows

    def broken(*a, **k):
        raise RuntimeError("the data could not be built")

    monkeypatch.setattr(bench, "make_workload", broken)
    before = good_csv.read_bytes()
    code = run_bench(_bench_args(["--method", "full", *SMALL23, "--out", str(good_csv)]))
    err = capsys.readouterr().err
    assert code == 1
    assert "full: error: RuntimeError: the data could not be built" in err
    assert good_csv.read_bytes() == before and "left as it was" in err
    saved = _fallbacks(good_csv.parent)
    assert len(saved) == 1 and read_rows(saved[0])[0]["status"] == "error"


def test_run_point_refuses_a_duplicate_before_building(monkeypatch):
    from membptt.measure import bench
    from membptt.measure.workload import WorkloadConfig

    monkeypatch.setattr(bench, "make_workload", lambda *a: pytest.fail("built a workload"))
    cfg = bench.BenchConfig(methods=["full", "full"], workload=WorkloadConfig(seq_len=4))
    with pytest.raises(ValueError, match="given twice"):
        bench.run_point(cfg, log=lambda *a: None)


def test_global_peak_budget_does_not_make_full_refer_to_itself():
    from membptt.measure.bench import check_methods

    checks = check_methods(["full", "msm"], {"memory": "peak(full)"}, 8)
    assert [c.peak_of for c in checks] == [None, "full"]


@pytest.mark.parametrize("name,expect", [
    ("loop", "a symbolic link that loops"),
    ("a" * 300, "300 bytes, above the file system's limit"),
    ("sub.csv/", "names a directory"),
    ("sub/.", "names a directory"),
    ("sub/..", "names a directory"),
])
def test_bench_output_names_are_one_line_errors(tmp_path, monkeypatch, capsys, nothing_built,
                                                 name, expect):
    """Issue 23, findings 12 and 14: a symlink loop and a 300-byte name were tracebacks; a
    trailing slash wrote the file `sub.csv` instead."""
    from membptt.measure.cli import run_bench

    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop").symlink_to("loop")
    code = run_bench(_bench_args(["--method", "full", *SMALL23, "--out", name]))
    assert expect in _one_line_error(code, capsys.readouterr().err)
    assert not (tmp_path / "sub.csv").exists()


def test_a_name_near_the_limit_can_be_written(tmp_path):
    """A 250-byte name is valid; the temporary file beside it used to be too long."""
    from membptt.measure.results import check_output_path, read_rows, write_rows

    path = tmp_path / ("b" * 246 + ".csv")
    check_output_path(path)
    write_rows(path, [{"method": "full"}])
    assert read_rows(path)[0]["method"] == "full"


def test_a_file_that_cannot_be_renamed_over_is_refused(tmp_path, monkeypatch):
    """Issue 23, finding 2: another user's file in a sticky directory passed the check (a file
    can be created there) and then failed with PermissionError on the rename, after measuring.
    (As another user: this test runs as whoever runs it, so the euid is faked.)"""
    from membptt.measure import results

    sticky = tmp_path / "shared"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    target = sticky / "theirs.csv"
    target.write_text("method\nfull\n")
    owner = os.stat(target).st_uid
    monkeypatch.setattr(results.os, "geteuid", lambda: owner + 1)
    with pytest.raises(ValueError, match="sticky directory"):
        results.check_output_path(target)
    results.check_output_path(sticky / "mine.csv")  # a new file there is fine


def _immutable(path: Path) -> bool:
    r = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    return r.returncode == 0


def test_an_immutable_file_is_refused(tmp_path):
    from membptt.measure.results import check_output_path

    target = tmp_path / "frozen.csv"
    target.write_text("x\n")
    if not _immutable(target):
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(ValueError, match="immutable"):
            check_output_path(target)
    finally:
        subprocess.run(["chattr", "-i", str(target)])


def _fallbacks(where: Path) -> list[Path]:
    return sorted(where.glob("*.unsaved-*"))


def test_a_failed_rename_keeps_the_measurement(tmp_path, monkeypatch, capsys, good_csv):
    """Issue 23, finding 2: PermissionError on the final rename threw the measurement away
    (traceback). Now: the table on stdout (under -q too), the rows next to the target, one line
    saying where, exit 3; the old file is untouched."""
    from membptt.measure import results
    from membptt.measure.cli import EXIT_UNSAVED, run_bench

    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst) == good_csv:
            raise PermissionError(1, "Operation not permitted", str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(results.os, "replace", replace)
    before = good_csv.read_bytes()
    code = run_bench(_bench_args(["--method", "full,torch-checkpoint", *SMALL23,
                                  "--out", str(good_csv)]))
    out, err = capsys.readouterr()
    assert code == EXIT_UNSAVED == 3
    assert good_csv.read_bytes() == before
    saved = _fallbacks(good_csv.parent)
    assert len(saved) == 1 and saved[0].name.startswith("eq.unsaved-"), saved
    rows = results.read_rows(saved[0])
    assert [r["label"] for r in rows] == ["full", "torch-checkpoint"]
    assert all(r["status"] == "ok" and float(r["time_median_s"]) > 0 for r in rows)
    assert "Operation not permitted" in err and str(saved[0]) in err
    assert "torch-checkpoint" in out and "time_med_s" in out  # the table, despite -q
    assert not list(good_csv.parent.glob(".eq.csv.*"))  # no temporary left


def test_a_directory_gone_mid_run_is_not_a_bad_argument(tmp_path, monkeypatch, capsys):
    """Issue 23, finding 2: the target's directory made unusable while measuring gave exit 2
    ("bad arguments") and lost the rows. (Unusable here: replaced by a file, which stops root
    too; a read-only directory does not.) The rows go to the temporary directory."""
    from membptt.measure import bench
    from membptt.measure.cli import EXIT_UNSAVED
    from membptt.measure.results import read_rows

    spare = tmp_path / "tmp"
    spare.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spare))
    out_dir = tmp_path / "out"
    real = bench.run_point

    def run_and_break(*a, **k):
        res = real(*a, **k)
        out_dir.rmdir()
        out_dir.write_text("not a directory any more")
        return res

    monkeypatch.setattr(bench, "run_point", run_and_break)
    code = main(["bench", "--method", "full", *SMALL23, "--out", str(out_dir / "p.csv")])
    err = capsys.readouterr().err
    assert code == EXIT_UNSAVED, err
    saved = _fallbacks(spare)
    assert len(saved) == 1 and read_rows(saved[0])[0]["status"] == "ok"
    assert str(saved[0]) in err


def test_a_write_error_puts_the_rows_on_stderr(tmp_path, good_csv):
    """Issue 23, finding 2: `ulimit -f 2` (no file can be written at all) was a traceback
    `OSError: File too large`; now the rows come out on stderr, exit 3."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    before = good_csv.read_bytes()
    env = {**ENV, "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "membptt.cli", "bench", "--method",
                        "full,torch-checkpoint", *SMALL23, "--out", str(good_csv)],
                       env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert r.returncode == 3, r.stderr[-3000:]
    assert "File too large" in r.stderr and "Traceback" not in r.stderr
    assert good_csv.read_bytes() == before
    text = r.stderr.split("-----\n", 1)[1].split("----- end of unsaved rows", 1)[0]
    import csv as _csv
    import io as _io

    rows = list(_csv.DictReader(_io.StringIO(text)))
    assert [x["label"] for x in rows] == ["full", "torch-checkpoint"]
    assert all(x["status"] == "ok" for x in rows)


# -- `membptt plan`: strict JSON, a table limit the machine can hold, cost-file names ----------

def test_plan_json_is_strict(monkeypatch, capsys):
    """Issue 23, finding 4 (the CLI's part): `--json` printed `Infinity`, which strict parsers
    refuse; every non-finite number is now null."""
    from membptt.planning.plan import Plan

    real = Plan.to_dict
    monkeypatch.setattr(Plan, "to_dict", lambda self, **k: {**real(self, **k),
                                                            "predicted_cost": float("inf"),
                                                            "x": [float("nan"), 1.5]})

    def refuse(name):
        raise AssertionError(f"not strict JSON: {name}")

    code, out, _ = _cli(["plan", "--strategy", "hsm", "--seq-len", "10", "--memory", "3",
                         "--json"], capsys)
    assert code == 0
    d = json.loads(out, parse_constant=refuse)
    assert d["predicted_cost"] is None and d["x"] == [None, 1.5]
    assert d["forward_ops"] == membptt.plan("hsm", 10, 3).forward_ops


def test_plan_table_limit_above_the_machine_is_refused(capsys):
    """Issue 23, finding 10: a limit above the machine's memory let the DP try (MemoryError)."""
    from membptt.cli import machine_memory_bytes

    have = machine_memory_bytes()
    if have is None:
        pytest.skip("the machine's memory is unknown here")
    code, _, err = _cli(["plan", "--strategy", "hsm", "--seq-len", "10", "--memory", "3",
                         "--max-table-mib", str(2 * have // 2**20)], capsys)
    assert "above this machine's memory" in _one_line_error(code, err)
    code, _, _ = _cli(["plan", "--strategy", "hsm", "--seq-len", "10", "--memory", "3",
                       "--max-table-mib", str(have // 2**21)], capsys)
    assert code == 0


@pytest.mark.parametrize("data,expect,never", [
    ({"hidden_bytes": 0}, "hidden_bytes must be", "CostModel."),
    ({"segments": {"lengths": [1], "forward": [1.0], "backward": [1.0], "stored_bytes": [8],
                   "beta_bytes": [8], "working_bytes": [8], "run_lengths": [1],
                   "run_seconds": [-1.0]}}, "segments.run_seconds must", "SegmentCosts."),
])
def test_cost_file_errors_name_the_file_and_the_field(tmp_path, capsys, data, expect, never):
    """Issue 23, finding 14: cost-file errors named `CostModel.`/`SegmentCosts.` fields the
    user never wrote, and no file."""
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    code, _, err = _cli(["plan", "--strategy", "msm", "--seq-len", "10", "--memory", "5",
                         "--costs", str(path)], capsys)
    line = _one_line_error(code, err)
    assert str(path) in line and expect in line and never not in line, line
