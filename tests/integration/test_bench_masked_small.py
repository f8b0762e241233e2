"""The masked-branch benchmark's small mode still runs end to end (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.integration


def test_bench_masked_small(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_masked", "--small",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "masked_small.json").read_text())
    assert json.loads(done.stdout) == result
    assert result["users"] == 5000 and result["rounds"] == 1
    for key in ("plain_branch_seconds", "masked_first_seconds", "masked_next_seconds"):
        assert result[key]["n"] == 1 and result[key]["p50"] > 0
