"""The masked-branch benchmark's small mode still runs end to end (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_small_benchmark

pytestmark = pytest.mark.integration


def test_bench_masked_small(tmp_path: Path) -> None:
    result = run_small_benchmark("bench_masked", "--out", str(tmp_path))
    assert json.loads((tmp_path / "masked_small.json").read_text()) == result
    assert result["users"] == 5000 and result["rounds"] == 1
    for key in ("plain_branch_seconds", "masked_first_seconds", "masked_next_seconds"):
        assert result[key]["n"] == 1 and result[key]["p50"] > 0
