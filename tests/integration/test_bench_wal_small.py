"""The WAL benchmarks' small modes still run end to end (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_small_benchmark

pytestmark = pytest.mark.integration


def test_bench_archive_small(tmp_path: Path) -> None:
    result = run_small_benchmark("bench_archive", "--out", str(tmp_path))
    assert json.loads((tmp_path / "archive_small.json").read_text()) == result
    per = result["per_segment"]["ms_per_segment"]
    assert set(per) == {"c_program", "python_minimal", "python_with_cygnet"}
    bench = result["pgbench"]
    assert bench["tps_on"] and bench["tps_off"] and bench["tps_ratio_median"] > 0
    # A few seconds at scale 1 may fill no segment: lag is reported, not asserted.
    assert bench["segments_archived"] >= 0 and "p99" in bench["archive_lag_seconds"]


def test_bench_pitr_small(tmp_path: Path) -> None:
    result = run_small_benchmark("bench_pitr", "--out", str(tmp_path))
    assert result["pitr_ready_seconds"]["n"] == 1
    assert result["pgbackrest_restore_time_seconds"]["n"] == 1
    assert result["wal_bytes_since_snapshot"] > 0
