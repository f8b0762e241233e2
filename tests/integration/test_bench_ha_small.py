"""bench_ha's small mode still runs end to end: a switchover and a host loss on three
hosts, nothing acknowledged lost (timings printed by the benchmark, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_small_benchmark

pytestmark = pytest.mark.integration


def test_bench_ha_small(tmp_path: Path) -> None:
    result = run_small_benchmark("bench_ha", "--out", str(tmp_path))
    assert json.loads((tmp_path / "ha_small.json").read_text()) == result
    assert result["acknowledged"] > 100 and result["acknowledged_lost"] == 0
    assert result["failover"]["from"] != result["failover"]["to"]
