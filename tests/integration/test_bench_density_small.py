"""The density benchmark's small mode runs end to end (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_small_benchmark

pytestmark = pytest.mark.integration


def test_bench_density_small(tmp_path: Path) -> None:
    result = run_small_benchmark("bench_density", "--out", str(tmp_path))
    assert json.loads((tmp_path / "density.json").read_text()) == result
    assert [level["branches"] for level in result["levels"]] == [1, 4]
    last = result["levels"][-1]
    assert last["branches_listed"] == 4 and last["running"] == 2 and last["suspended"] == 2
    assert last["create_branch_seconds"]["n"] == last["raw_snapshot_clone_seconds"]["n"] == 2
    assert last["wake_suspended_branch_seconds"]["n"] == 2
    assert last["disk_per_branch"]["dataset_used_mib"] > 0
    assert last["disk_per_branch"]["suspended_through_api_used_mib"] > 0
    assert result["restart"]["adopted_same_pids"] and result["restart"]["postmasters"] == 2
