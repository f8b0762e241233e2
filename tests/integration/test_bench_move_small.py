"""bench_move's small mode still runs end to end: a database with two branches moves
under pgbench writes, there (received one dataset at a time) and back (side by side),
with no acknowledged commit lost and its tables unchanged (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_small_benchmark

pytestmark = pytest.mark.integration


def test_bench_move_small(tmp_path: Path) -> None:
    result = run_small_benchmark("bench_move", "--sizes", "10", "--branches", "2",
                                 "--compare", "2", "--out", str(tmp_path))
    assert json.loads((tmp_path / "move_small.json").read_text()) == result
    there, back = result["sizes"]
    assert (there["from"], there["to"]) == (back["to"], back["from"])
    for one in (there, back):
        assert one["lost"] == 0 and one["checksums_equal"] and one["balances_agree"], one
        assert one["client_downtime_seconds"] > 0
    assert there["moved_bytes"] > there["database_bytes"] / 2
    assert set(result["client_downtime_p50_by_mode"]) == {"one_stream", "side_by_side"}
