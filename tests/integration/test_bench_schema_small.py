"""The schema diff benchmark's small mode still runs end to end (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_small_benchmark

pytestmark = pytest.mark.integration


def test_bench_schema_diff_small(tmp_path: Path) -> None:
    result = run_small_benchmark("bench_schema_diff", "--out", str(tmp_path))
    assert json.loads((tmp_path / "schema_diff_small.json").read_text()) == result
    diff = result["diff"]
    assert diff["tables"] == 100 and diff["objects_in_a"] > 1000
    assert diff["oracle_dumps_equal"] is True
    assert diff["changes"] > 0 and diff["statements"] > 0
    for key in ("diff_seconds", "read_both_catalogs_seconds", "baseline_pg_dump_both_seconds"):
        assert diff[key]["n"] == 2 and diff[key]["p50"] > 0
