"""benchmarks.bench_placement in its small mode: it runs, through the API, on both stores.

No timing is asserted: the figures belong to benchmarks/README.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench_placement
from tests.integration import coordinator_helpers, pg_helpers
from tests.integration.coordinator_helpers import PgServer

pytestmark = pytest.mark.integration
pg_template = pg_helpers.pg_template
pg_server = coordinator_helpers.pg_server


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_placement_benchmark_small(kind: str, tmp_path: Path,
                                   request: pytest.FixtureRequest) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/coordinator.db"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        url = server.new_database()
    got = bench_placement.measure_store(tmp_path, url, hosts=100, databases=500, n=20,
                                        clients=5, seconds=0.5, baseline_seconds=0.5)
    for mode in ("index", "store path"):
        thr = got[mode]["throughput"]
        assert thr["placements"] > 0 and not thr["refused"], (mode, thr)
        assert got[mode]["latency_s"]["n"] == (20 if mode == "index" else 50)
        assert got[mode]["coordinator_rss_mb"] > 0


def test_balance_small(tmp_path: Path) -> None:
    got = bench_placement.balance(tmp_path, hosts=10, clients=5)
    assert got["placed"] > 0 and got["fleet_memory_fill"] >= 0.8
    assert 1.0 <= got["max_over_mean"] < 2.0
