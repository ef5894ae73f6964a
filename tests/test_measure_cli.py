"""`membptt bench` (membptt.measure.cli): rows, schema, atomic writes, failure statuses."""

import argparse
import csv
import os

import pytest
import torch

from membptt.measure import COLUMNS, METHODS, read_rows, write_rows
from membptt.measure import bench as bench_mod
from membptt.measure.bench import classify_exception
from membptt.measure.cli import add_bench_parser, run_bench
from membptt.measure.methods import Infeasible

SMALL = ["--seq-len", "12", "--hidden", "8", "--batch", "3", "--input-size", "5",
         "--classes", "4", "--repeats", "2", "--warmup", "0", "-q"]


def _args(argv):
    p = argparse.ArgumentParser()
    add_bench_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["bench", *argv])


def test_bench_writes_one_row_per_method(tmp_path):
    out = tmp_path / "points" / "p.csv"
    argv = ["--method", "full,full-fused,torch-checkpoint,msm", "--memory", "80%", *SMALL,
            "--no-rss", "--out", str(out)]
    assert run_bench(_args(argv), argv=["membptt", "bench", *argv]) == 0
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == COLUMNS
    rows = read_rows(out)
    assert [r["method"] for r in rows] == ["full", "full-fused", "torch-checkpoint", "msm"]
    for r in rows:
        assert r["status"] == "ok", r["message"]
        assert float(r["time_median_s"]) > 0 and int(r["repeats"]) == 2
        assert float(r["time_iqr_s"]) >= 0
        assert int(r["peak_bytes"]) > 0 and int(r["grad_bytes"]) > 0
        assert float(r["grad_error"]) < 1e-5
        assert r["seq_len"] == "12" and r["hidden"] == "8" and r["batch"] == "3"
        for col in ("device", "device_model", "torch_version", "package_version", "git_commit",
                    "timestamp", "command"):
            assert r[col], col
        assert r["torch_version"] == torch.__version__
        assert "--method" in r["command"]
    by = {r["method"]: r for r in rows}
    assert by["full"]["grad_error"] == "0.0"
    assert int(by["torch-checkpoint"]["forward_ops"]) == 2 * 12  # first sweep + recomputation
    assert by["full"]["budget_requested"] == ""  # the budget is for plan methods only
    msm = by["msm"]
    assert msm["strategy"] == "msm" and msm["cost_model"] == "unit"
    assert msm["budget_requested"] == "80%" and int(msm["budget_units"]) >= 1
    assert int(msm["budget_bytes"]) > 0
    predicted, W = int(msm["predicted_peak_bytes"]), int(msm["working_set_bytes"])
    # stored states as predicted plus at most the working set; W is the bound at a chain of
    # linked steps (it holds the summed parameter gradients beside .grad), and this plan's
    # peak falls elsewhere, with a lone core step's working set (0.86 W at this tiny size)
    peak = int(msm["peak_bytes"])
    assert predicted + 0.75 * W <= peak <= predicted + W
    assert float(msm["predicted_time_s"]) > 0 and int(msm["hidden_bytes"]) > 0
    assert not [p for p in os.listdir(out.parent) if p != "p.csv"]  # no temp files left


def test_rss_in_a_fresh_process(tmp_path):
    out = tmp_path / "r.csv"
    argv = ["--method", "full", *SMALL, "--repeats", "1", "--out", str(out)]
    assert run_bench(_args(argv)) == 0
    (r,) = read_rows(out)
    assert int(r["rss_peak_bytes"]) >= int(r["rss_baseline_bytes"]) > 10 * 2**20


def test_unknown_method_is_an_argument_error(tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert run_bench(_args(["--method", "nope", *SMALL, "--out", str(out)])) == 2
    assert "unknown method" in capsys.readouterr().err
    assert not out.exists()


def test_invalid_memory_is_an_argument_error(tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert run_bench(_args(["--method", "msm", "--memory", "lots", *SMALL, "--out", str(out)])) == 2
    assert "--memory" in capsys.readouterr().err
    assert not out.exists()


def _broken_method(exc):
    class Broken(METHODS["full"]):
        name = "broken"

        def run(self):
            raise exc

    return Broken


@pytest.mark.parametrize("exc,status,code", [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom", 0),
    (MemoryError(), "oom", 0),
    (Infeasible("budget below the minimum"), "infeasible", 0),
    (ZeroDivisionError("a bug"), "error", 1),
])
def test_failures_write_a_row_with_status(tmp_path, monkeypatch, exc, status, code):
    monkeypatch.setitem(METHODS, "broken", _broken_method(exc))
    out = tmp_path / "f.csv"
    argv = ["--method", "broken,full", *SMALL, "--no-rss", "--out", str(out)]
    assert run_bench(_args(argv)) == code
    rows = {r["method"]: r for r in read_rows(out)}
    assert rows["broken"]["status"] == status
    assert type(exc).__name__ in rows["broken"]["message"]
    assert rows["full"]["status"] == "ok"  # the other method still ran
    assert float(rows["full"]["time_median_s"]) > 0


def test_classify_exception():
    if hasattr(torch, "OutOfMemoryError"):
        assert classify_exception(torch.OutOfMemoryError("x")) == "oom"
    assert classify_exception(RuntimeError("DefaultCPUAllocator: can't allocate memory")) == "oom"
    assert classify_exception(ValueError("shape")) == "error"


def test_write_rows_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "a.csv"
    write_rows(out, [{"method": "full", "status": "ok"}])
    before = out.read_text()

    def boom(*a, **k):
        raise KeyboardInterrupt  # interrupted between writing and renaming

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_rows(out, [{"method": "msm", "status": "ok"}])
    assert out.read_text() == before  # the old file is untouched
    assert os.listdir(tmp_path) == ["a.csv"]  # and the temporary file was removed
    with pytest.raises(KeyError):
        write_rows(tmp_path / "b.csv", [{"not_a_column": 1}])


def test_bench_point_error_in_setup_writes_rows(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr(bench_mod, "make_workload", fail)
    out = tmp_path / "s.csv"
    assert run_bench(_args(["--method", "full", *SMALL, "--out", str(out)])) == 0
    (row,) = read_rows(out)
    assert row["status"] == "oom" and row["seq_len"] == "12"
