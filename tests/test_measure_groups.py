"""Comparison groups: one process, interleaved rounds, per-round ratios to the group's baseline."""

import pytest

from membptt.measure import WorkloadConfig, read_rows
from membptt.measure.bench import BenchConfig, round_ratios, run_point
from membptt.measure.cli import main as bench_main


def _floats(text):
    return [float(x) for x in str(text).split()]


def test_group_rows_carry_the_group_and_per_round_ratios():
    cfg = BenchConfig(methods=["full", "full-fused", "torch-checkpoint-fused:segments=3",
                               "msm:memory=80%"],
                      workload=WorkloadConfig(seq_len=12, hidden=8, batch=2, input_size=5,
                                              classes=4),
                      repeats=4, warmup=0, rss=False, group="g1", baseline="full")
    rows, code = run_point(cfg, log=lambda *a: None)
    assert code == 0
    by = {r["label"]: r for r in rows}
    base = by["full"]["time_samples_s"]
    base = _floats(base)
    for r in rows:
        assert r["group"] == "g1" and r["group_baseline"] == "full"
        ratios = _floats(r["ratio_samples"])
        samples = _floats(r["time_samples_s"])
        assert len(ratios) == 4
        # each ratio divides two times of the same round (rounded as written: 6 digits)
        for a, b, q in zip(samples, base, ratios):
            assert q == pytest.approx(a / b, rel=1e-4)
        assert r["ratio_q1"] <= r["ratio_median"] <= r["ratio_q3"]
    assert _floats(by["full"]["ratio_samples"]) == [1.0] * 4


def test_baseline_must_be_in_the_group():
    cfg = BenchConfig(methods=["full"], workload=WorkloadConfig(seq_len=3, hidden=4, batch=1,
                                                                input_size=3, classes=3),
                      baseline="full-fused")
    with pytest.raises(ValueError, match="baseline 'full-fused' is not one of"):
        run_point(cfg)


def test_ratios_of_different_runs_are_refused():
    with pytest.raises(ValueError, match="different runs"):
        round_ratios([1.0, 2.0], [1.0])


def test_cli_writes_group_columns(tmp_path):
    out = tmp_path / "g.csv"
    code = bench_main(["--method", "full-fused,full", "--baseline", "full", "--group", "T12",
                       "-T", "12", "--hidden", "6", "--input-size", "4", "--classes", "4",
                       "--batch", "2", "--repeats", "2", "--warmup", "0", "--no-rss", "-q",
                       "--out", str(out)])
    assert code == 0
    rows = read_rows(out)
    assert [r["group"] for r in rows] == ["T12", "T12"]
    assert {r["hostname"] for r in rows} and all(r["timestamp"] for r in rows)
    full = next(r for r in rows if r["method"] == "full")
    assert float(full["ratio_median"]) == 1.0


def test_cli_rejects_a_baseline_outside_the_methods(tmp_path, capsys):
    code = bench_main(["--method", "full", "--baseline", "msm", "-T", "5", "--out",
                       str(tmp_path / "x.csv")])
    assert code == 2 and "--baseline 'msm' is not one of" in capsys.readouterr().err


def test_budget_at_another_methods_peak_is_resolved_in_the_group():
    cfg = BenchConfig(methods=["full", "torch-checkpoint-fused:segments=4",
                               "msm:memory=peak(torch-checkpoint-fused:segments=4)"],
                      workload=WorkloadConfig(seq_len=24, hidden=16, batch=4, input_size=8,
                                              classes=8),
                      repeats=1, warmup=0, rss=False, grad_check=False, group="eq")
    rows, code = run_point(cfg, log=lambda *a: None)
    by = {r["label"]: r for r in rows}
    assert code == 0, rows
    msm = by["msm:memory=peak(torch-checkpoint-fused:segments=4)"]
    ckpt = by["torch-checkpoint-fused:segments=4"]
    assert msm["status"] == "ok", msm["message"]
    assert msm["budget_requested"] == "peak(torch-checkpoint-fused:segments=4)"
    # the byte budget is the reference's whole measured peak: the planner subtracts the probed
    # working set itself, so the plan's predicted and measured peaks stay within it
    assert msm["budget_bytes"] == ckpt["peak_bytes"]
    assert msm["predicted_total_peak_bytes"] <= msm["budget_bytes"]
    assert msm["peak_bytes"] <= ckpt["peak_bytes"]


def test_peak_reference_outside_the_group_is_refused():
    cfg = BenchConfig(methods=["full", "msm:memory=peak(torch-checkpoint)"],
                      workload=WorkloadConfig(seq_len=5, hidden=4, batch=1, input_size=3,
                                              classes=3))
    with pytest.raises(ValueError, match=r"needs 'torch-checkpoint' among the group"):
        run_point(cfg, log=lambda *a: None)
