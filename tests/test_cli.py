import json
import subprocess
import sys

import pytest

from membptt.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_json(capsys):
    code, out, _ = run(capsys, "plan", "--strategy", "msm", "--seq-len", "1000", "--memory",
                       "250", "--alpha", "5", "--json")
    assert code == 0
    d = json.loads(out)
    for key in ("strategy", "seq_len", "memory", "alpha", "beta", "forward_ops", "backward_ops",
                "peak_memory", "cost_per_step"):
        assert key in d
    assert d["forward_ops"] == 1950 and d["cost_per_step"] == 1.95 and d["peak_memory"] <= 250


def test_plan_trace(capsys, published):
    code, out, _ = run(capsys, "plan", "--strategy", "hsm", "--seq-len", "10", "--memory", "4",
                       "--trace")
    assert code == 0 and published["fig3"]["trace_t10_m4"] in out


def test_plan_beta_and_bytes(capsys, tmp_path):
    costs = tmp_path / "c.json"
    costs.write_text(json.dumps({"hidden_bytes": 1024, "internal_bytes": 5000}))
    code, out, _ = run(capsys, "plan", "--strategy", "msm", "--seq-len", "100", "--memory",
                       "50KiB", "--costs", str(costs), "--json")
    d = json.loads(out)
    assert code == 0 and d["alpha"] == 5 and d["peak_bytes"] <= 50 * 1024


@pytest.mark.parametrize("args,msg", [
    (["--strategy", "nope", "--seq-len", "5", "--memory", "3"], "valid strategies"),
    (["--strategy", "hsm", "--seq-len", "0", "--memory", "3"], "seq_len"),
    (["--strategy", "msm", "--seq-len", "5", "--memory", "3", "--alpha", "0"], "alpha"),
    (["--strategy", "msm", "--seq-len", "5", "--memory", "3", "--alpha", "2", "--beta", "3"],
     "beta must be <= alpha"),
    (["--strategy", "msm", "--seq-len", "5", "--memory", "lots", "--alpha", "2"], "'lots'"),
    (["--strategy", "hsm", "--seq-len", "50", "--memory", "0"], "minimum"),
    (["--strategy", "hsm", "--seq-len", "x"], "invalid int value"),
])
def test_bad_input_exit_2_no_traceback(capsys, args, msg):
    with pytest.raises(SystemExit) if "x" in args else _nullctx() as e:
        code = main(["plan", *args])
    if e is not None and hasattr(e, "value"):
        code = e.value.code
    _, err = capsys.readouterr()
    assert code == 2
    assert msg in err and "Traceback" not in err


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def test_console_script_exit_code():
    r = subprocess.run([sys.executable, "-m", "membptt.cli", "plan", "--strategy", "msm",
                        "--seq-len", "10", "--memory", "3", "--alpha", "7", "--beta", "9"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "beta must be <= alpha" in r.stderr
    assert "Traceback" not in r.stderr
