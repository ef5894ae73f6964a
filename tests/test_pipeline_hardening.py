"""Pipeline hardening (issue 11 items 3 and 6; issue 10's resume, Slurm and fresh-clone checks).

* paths are never interpreted by a shell: an ``outdir`` with a ``;`` or a space runs as a
  plain directory name (no rule has a ``shell:`` directive; the bench rule runs ``membptt``
  from a script with an argument list);
* the config is rejected, with the key named, when the rules could not run it;
* ``snakemake --unlock`` and a dry run under the Slurm profile work without ``--cores``;
* on a fresh clone (every file's mtime = checkout time) a dry run lists no measured job.
"""

from __future__ import annotations

import json
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

pytestmark = pytest.mark.skipif(not SNAKEMAKE.exists() or shutil.which("git") is None,
                                reason="needs snakemake in the test interpreter's environment")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pipeline import TINY  # noqa: E402


def snakemake(workdir: Path, *args, config: Path | None = None, timeout=300):
    cmd = [str(SNAKEMAKE), *args, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    if config is not None:
        cmd += ["--configfile", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def write_config(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def tiny(**changes) -> dict:
    cfg = json.loads(json.dumps(TINY))
    for path, value in changes.items():
        node = cfg
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return cfg


@pytest.mark.parametrize("outdir", ["o;touch INJECTED;", "out dir"])
def test_outdir_is_never_interpreted_by_a_shell(tmp_path, outdir):
    cfg = tiny(outdir=outdir)
    config = write_config(tmp_path, cfg)
    target = os.path.normpath(os.path.join(outdir, "results", "groups", "fig2b_T8.csv"))
    res = snakemake(tmp_path, target, "--cores", "1", config=config)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert (tmp_path / target).stat().st_size > 0
    created = [p for p in tmp_path.rglob("INJECTED")] + list(ROOT.glob("INJECTED"))
    assert not created, created


def test_no_rule_runs_a_shell_command():
    for smk in [ROOT / "Snakefile", *(ROOT / "experiments" / "rules").glob("*.smk")]:
        assert not re.search(r"^\s+shell:", smk.read_text(), flags=re.M), smk


@pytest.mark.parametrize("changes,message", [
    ({"theory__lengths": {"min": 500, "max": 20, "points": 5}},
     r"theory\.lengths: min \(500\) must be below max \(20\)"),
    ({"measured__tradeoff__budgets": ["0%"]}, r"'0%' does not match"),
    ({"measured__tradeoff__budgets": ["0"]}, r"'0' does not match"),
    ({"measured__fig2b__lengths": [1]}, r"1 is less than the minimum of 2"),
    ({"measured__tradeoff__seq_len": 1}, r"1 is less than the minimum of 2"),
    ({"measured__tradeoff__segments": [9]}, r"measured\.tradeoff\.segments: \[9\] exceed "
                                            r"seq_len 8"),
    ({"measured__tradeoff__fixed_methods": []}, r"should be non-empty|is too short"),
    ({"measured__tradeoff__equal_memory_reference": "msm"}, r"'msm' is not one of"),
])
def test_config_the_rules_cannot_run_is_rejected(tmp_path, changes, message):
    config = write_config(tmp_path, tiny(**changes))
    res = snakemake(tmp_path, "all", "-n", config=config)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert re.search(message, out), out[-3000:]


def test_equal_memory_without_plan_budgets_is_runnable(tmp_path):
    """Empty plan_methods and budgets with equal_memory set (an IndexError before): the
    equal-memory methods take their budget from the reference's peak in the same group."""
    config = write_config(tmp_path, tiny(measured__tradeoff__plan_methods=[],
                                         measured__tradeoff__budgets=[]))
    res = snakemake(tmp_path, "all", "-n", "--cores", "1", config=config)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "tradeoff_T8.csv" in res.stdout


def test_unlock_needs_no_cores(tmp_path):
    config = write_config(tmp_path, tiny())
    res = snakemake(tmp_path, "--unlock", config=config)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Unlocked" in res.stdout + res.stderr


def test_slurm_profile_dry_run(tmp_path):
    """The Slurm profile sets no --cores: nothing may read workflow.cores."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    config = write_config(tmp_path, tiny())
    res = snakemake(tmp_path, "all", "-n", "--profile", str(ROOT / "profiles" / "slurm"),
                    config=config)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "bench_group" in out and "cores to be defined" not in out


def test_fresh_clone_lists_no_measured_job(tmp_path):
    """git gives every file the checkout time (in any order): a dry run of the committed
    default config on a clone must list no bench job (the measured outputs depend only on
    the config) and no theory job."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                      capture_output=True).returncode:
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    rng = random.Random(0)
    files = [p for p in clone.rglob("*") if p.is_file() and ".git" not in p.parts]
    rng.shuffle(files)
    t0 = 1_700_000_000
    for k, p in enumerate(files):  # an arbitrary checkout order
        os.utime(p, (t0 + k, t0 + k))
    res = subprocess.run([str(SNAKEMAKE), "all", "-n", "--cores", "2"], cwd=clone,
                         capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert "bench_group" not in jobs, out[-3000:]
    assert not any(k.startswith("theory_") for k in jobs), jobs


def test_a_killed_run_resumes_with_the_documented_commands(tmp_path):
    """SIGKILL the whole run mid-way (lock and incomplete markers left behind), then the
    documented resume: `snakemake --unlock` and the same `snakemake all --cores N`."""
    import signal
    import time

    cfg = tiny()
    cfg["measured"]["enabled"] = False
    config = write_config(tmp_path, cfg)
    cmd = [str(SNAKEMAKE), "all", "--cores", "1", "-s", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(config)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    theory = tmp_path / "results" / "theory"
    while time.time() < deadline and proc.poll() is None:
        if theory.exists() and any(theory.glob("*.csv")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((tmp_path / ".snakemake" / "locks").glob("*")), "expected a stale lock"
    res = snakemake(tmp_path, "--unlock", config=config)
    assert res.returncode == 0, res.stderr[-3000:]
    res = snakemake(tmp_path, "all", "--cores", "2", config=config, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert (tmp_path / "paper" / "REPORT.md").stat().st_size > 0
    res = snakemake(tmp_path, "all", "-n", config=config)
    assert "Nothing to be done" in res.stdout + res.stderr
