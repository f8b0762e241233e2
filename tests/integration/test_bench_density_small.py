"""The density benchmark's small mode runs end to end (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.integration


def test_bench_density_small(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_density", "--small",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "density.json").read_text())
    assert json.loads(done.stdout) == result
    assert [level["branches"] for level in result["levels"]] == [1, 4]
    last = result["levels"][-1]
    assert last["branches_listed"] == 4 and last["running"] == 2 and last["stopped"] == 2
    assert last["create_branch_seconds"]["n"] == last["raw_snapshot_clone_seconds"]["n"] == 2
    assert last["start_stopped_branch_seconds"]["n"] == 2
    assert last["disk_per_branch"]["dataset_used_mib"] > 0
    assert result["restart"]["adopted_same_pids"] and result["restart"]["postmasters"] == 2
