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
