"""The heartbeat benchmark's small mode: 50 simulated hosts beating every second."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_heartbeats import run_one

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["stream", "unary"])
def test_heartbeat_benchmark_small(tmp_path: Path, mode: str) -> None:
    got = run_one(tmp_path, f"sqlite:///{tmp_path}/hb.db", 50, interval=1.0, warmup=1.5,
                  window=2.0, mode=mode)
    assert got["mode"] == mode
    assert got["errors"] == {}
    assert got["heartbeats"] >= 50  # every host beat at least once in the window
    assert got["coordinator_cpu_core"] > 0 and got["coordinator_rss_mb"] > 0
    assert got["latency_s"]["p50"] > 0
