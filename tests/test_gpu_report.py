"""The GPU report built from committed card runs (experiments/rules/gpu.smk, issue 21).

* on a fresh clone (every file's mtime = checkout time, in any order), `snakemake -n all` with
  experiments/config/gpu.yaml (the H200 and H100 runs) and with the fixture config lists no
  bench or theory job: only the cards' report jobs;
* the fixture card (tests/data/gpu-fixture/: a tiny CPU run of `gpurun.py run` whose deadline
  let only its first group run) gets its REPORT.md and figures, its planned-but-unrun group is
  shown as not measured, and a second dry run has nothing to do;
* the GPU run resolves a config exactly as the Snakefile does (default.yaml, the file, the
  schema's defaults), so it runs the pipeline's own groups without Snakemake;
* bad input: a card folder without card.yaml, a GPU run past its deadline, run.sh without a
  GPU, a bad --deadline-s.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
GPU_CONFIG = "experiments/config/gpu.yaml"
FIXTURE_CONFIG = "tests/data/gpu_fixture.yaml"
GPURUN = ROOT / "experiments" / "gpu" / "gpurun.py"

sys.path.insert(0, str(ROOT / "experiments" / "gpu"))
import gpurun  # noqa: E402

needs_snakemake = pytest.mark.skipif(
    not SNAKEMAKE.exists() or shutil.which("git") is None,
    reason="needs snakemake in the test interpreter's environment and git")


def jobs(out: str) -> dict:
    return dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                      capture_output=True).returncode:
        pytest.skip("not a git checkout")
    work = tmp_path_factory.mktemp("gpu") / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(work)], check=True)
    rng = random.Random(1)
    files = [p for p in work.rglob("*") if p.is_file() and ".git" not in p.parts]
    rng.shuffle(files)
    for k, p in enumerate(files):  # an arbitrary checkout order
        os.utime(p, (1_700_000_000 + k, 1_700_000_000 + k))
    return work


def snakemake(cwd: Path, *args, timeout=300):
    res = subprocess.run([str(SNAKEMAKE), *args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout)
    return res, res.stdout + res.stderr


@needs_snakemake
@pytest.mark.parametrize("config", [GPU_CONFIG, FIXTURE_CONFIG])
def test_fresh_clone_dry_run_lists_only_report_jobs(clone, config):
    res, out = snakemake(clone, "all", "-n", "--cores", "2", "--configfile", config)
    assert res.returncode == 0, out[-3000:]
    listed = jobs(out)
    assert "bench_group" not in listed, out[-3000:]
    assert not any(k.startswith("theory_") for k in listed), listed
    assert set(listed) - {"all", "total"} <= {
        "gpu_aggregate", "gpu_fig2b_time", "gpu_fig_tradeoff", "gpu_fig_predicted_vs_measured",
        "gpu_fig_reversible", "gpu_report"}, listed


@needs_snakemake
def test_fixture_card_report_marks_the_unmeasured_group(clone):
    res, out = snakemake(clone, "all", "--cores", "2", "--configfile", FIXTURE_CONFIG)
    assert res.returncode == 0, out[-3000:]
    card = clone / "tests" / "data" / "gpu-fixture"
    text = (card / "REPORT.md").read_text()
    assert "test fixture (CPU, tiny LSTM: not a GPU)" in text
    # the planned group the deadline skipped: not measured in the groups table and in Fig. 2b
    assert re.search(r"^\| `fig2b_T50` \| \*\*not measured\*\* \|", text, flags=re.M), text
    fig2b = [ln for ln in text.splitlines() if ln.startswith("| Fig. 2b")]
    assert fig2b and all("**not measured**" in ln for ln in fig2b), fig2b
    # the measured group: its headline row is computed inside it, against the paper's numbers
    head = next(ln for ln in text.splitlines() if ln.startswith("| Headline"))
    assert "memory ×0.05, time ×1.317" in head and "| tradeoff_T1000 |" in head, head
    assert re.search(r"peak ×\d\.\d{3} of full's", head) and "not measured" not in head, head
    # nothing from another card
    assert "H200" not in text and "H100" not in text
    for name in ("tradeoff_memory_time", "predicted_vs_measured"):
        png = (card / "report" / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
    assert not (card / "report" / "figures" / "fig2b_time.png").exists()
    res, out = snakemake(clone, "all", "-n", "--cores", "2", "--configfile", FIXTURE_CONFIG)
    assert res.returncode == 0 and "Nothing to be done" in out, out[-3000:]


@needs_snakemake
def test_card_without_record_is_an_error_naming_the_key(tmp_path):
    cfg = yaml.safe_load((ROOT / FIXTURE_CONFIG).read_text())
    cfg["cards"] = {"bogus": str(tmp_path / "nowhere")}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([str(SNAKEMAKE), "all", "-n", "-s", str(ROOT / "Snakefile"),
                          "--directory", str(ROOT), "--configfile", str(path)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode != 0
    assert "config cards.bogus: no card.yaml in" in res.stdout + res.stderr


@pytest.mark.parametrize("config", ["experiments/config/default.yaml",
                                    "experiments/config/paper.yaml", GPU_CONFIG,
                                    FIXTURE_CONFIG])
def test_gpu_run_resolves_the_config_as_snakemake_does(config):
    snakemake_utils = pytest.importorskip("snakemake.utils")
    base = yaml.safe_load((ROOT / "experiments" / "config" / "default.yaml").read_text())
    snakemake_utils.update_config(base, yaml.safe_load((ROOT / config).read_text()))
    snakemake_utils.validate(base, str(ROOT / "experiments" / "config" / "schema.yaml"))
    ours = gpurun.resolve_config(ROOT / config)
    assert ours == base
    assert gpurun.run_order(ours)  # every config here has groups


def test_gpu_run_order_and_commands():
    cfg = gpurun.resolve_config(ROOT / GPU_CONFIG)
    order = list(gpurun.run_order(cfg))
    assert order == ["tradeoff_T1000", "fig2b_T10000", "fig2b_T1000", "fig2b_T100"]
    g = gpurun.run_order(cfg)["fig2b_T10000"]
    assert g["methods"] == ["full", "full-fused", "hsm:memory=50", "hsm:memory=100"]
    assert g["args"][g["args"].index("--device") + 1] == "cuda"


def test_gpu_run_past_its_deadline_measures_nothing(tmp_path):
    out = tmp_path / "card"
    res = subprocess.run([sys.executable, str(GPURUN), "run", "--config",
                          str(ROOT / FIXTURE_CONFIG), "--out", str(out), "--deadline-s", "1",
                          "--min-group-s", "30"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    rec = gpurun.load_card(out)
    assert rec["planned"] == ["tradeoff_T1000", "fig2b_T50"] and rec["csvs"] == {}
    for g in rec["planned"]:
        assert "skipped" in (out / "times" / f"{g}.times").read_text()
    assert gpurun.wall_times(rec) == {}


def test_gpu_run_rejects_a_bad_deadline(tmp_path):
    res = subprocess.run([sys.executable, str(GPURUN), "run", "--out", str(tmp_path / "o"),
                          "--deadline-s", "-5"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "--deadline-s must be a positive number of seconds, got -5.0" in res.stderr
    assert not (tmp_path / "o").exists()


def test_run_sh_without_a_gpu_says_so_and_still_packs(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run.sh would measure")
    out = tmp_path / "run"
    res = subprocess.run(["bash", str(ROOT / "experiments" / "gpu" / "run.sh"), str(out)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "torch sees no CUDA device" in res.stdout + res.stderr
    assert (tmp_path / "run.tgz").exists() and (out / "DEVICE.txt").exists()
    assert not (out / "groups").exists()


def test_the_committed_fixture_is_what_gpurun_wrote():
    """The fixture is a real run: its group has the config's methods and planned list."""
    rec = gpurun.load_card(ROOT / "tests" / "data" / "gpu-fixture")
    cfg = gpurun.resolve_config(ROOT / FIXTURE_CONFIG)
    assert rec["planned"] == list(gpurun.run_order(cfg))
    import pandas as pd
    d = pd.read_csv(rec["csvs"]["tradeoff_T1000"])
    assert list(d.label) == gpurun.run_order(cfg)["tradeoff_T1000"]["methods"]
    assert set(d.group) == {"tradeoff_T1000"} and d.timestamp.nunique() == 1
