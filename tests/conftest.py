import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def published():
    """The paper's numbers: one file read by the tests and the report."""
    return json.loads((ROOT / "paper" / "published.json").read_text())
