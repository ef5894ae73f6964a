"""Every Python example in the README runs as written.

The blocks run in order in one namespace (a later block may use an earlier one's names, as a
reader's session would). Blocks that import torch run at smaller sizes so the suite stays
fast: the widths of the paper's setup (256 units, batch 64) are replaced by small ones (16,
4), nothing else (T stays 1000); the planning-only first block runs unchanged and its printed values are
checked against the comments beside them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

README = Path(__file__).resolve().parents[1] / "README.md"
SMALLER = {"256": "16", "64": "4"}


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def _smaller(code: str) -> str:
    return re.sub(r"\b(256|64)\b", lambda m: SMALLER[m.group(1)], code)


def test_readme_examples_run(capsys):
    import membptt
    from membptt.measure import METHODS, WorkloadConfig, make_method, make_workload
    from membptt.models.registry import MODELS

    blocks = _blocks()
    assert len(blocks) >= 6
    ns: dict = {}
    try:
        for i, code in enumerate(blocks):
            src = code if "torch" not in code and "membptt.models" not in code \
                and "membptt.measure" not in code else _smaller(code)
            exec(compile(src, f"README.md block {i + 1}", "exec"), ns)
            if i == 0:
                out = capsys.readouterr().out.splitlines()
                assert out[0] == "1950 250 1.95"
                assert out[1] == membptt.plan("hsm", 10, 4).trace()
        # the last block's registrations are usable as the README says
        w = make_workload(WorkloadConfig(model="my-rnn", seq_len=12, hidden=8, batch=2,
                                         input_size=8, classes=8))
        m = make_method("two-halves", w)
        m.prepare()
        w.zero_grad()
        assert float(m.run()) > 0
        assert all(p.grad is not None for p in w.parameters())
    finally:
        METHODS.pop("two-halves", None)
        MODELS.pop("my-rnn", None)
