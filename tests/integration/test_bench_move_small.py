"""bench_move's small mode still runs end to end: each database moves under pgbench
writes with no acknowledged commit lost and its tables unchanged (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_small_benchmark

pytestmark = pytest.mark.integration


def test_bench_move_small(tmp_path: Path) -> None:
    result = run_small_benchmark("bench_move", "--sizes", "10", "--out", str(tmp_path))
    assert json.loads((tmp_path / "move_small.json").read_text()) == result
    [one] = result["sizes"]
    assert one["lost"] == 0 and one["checksums_equal"] and one["balances_agree"], one
    assert one["client_downtime_seconds"] > 0 and one["moved_bytes"] > one["database_bytes"] / 2
