import json
import os
from pathlib import Path

import pytest

# the probe's timing loops run at least 1 s by default (stable prices); tests time nothing, so
# their probes take exactly the rounds they ask for (also in the subprocesses they start)
os.environ.setdefault("MEMBPTT_PROBE_MIN_SECONDS", "0")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def published():
    """The paper's numbers: one file read by the tests and the report."""
    return json.loads((ROOT / "paper" / "published.json").read_text())


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny ops: one torch thread avoids OpenMP oversubscription on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
