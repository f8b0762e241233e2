"""The branching comparison's small mode still runs end to end (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_small_benchmark

METHODS = {"cygnet_branch", "cygnet_new_database", "createdb_file_copy", "createdb_wal_log",
           "pg_dump_restore", "pg_basebackup", "createdb_file_copy_clone"}


def test_bench_compare_small(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # a dev dependency; the charts need it
    result = run_small_benchmark("bench_compare", "--out", str(tmp_path))
    assert json.loads((tmp_path / "compare_small.json").read_text()) == result
    assert set(result["methods"]) == METHODS
    assert all(label for label in result["methods"].values())
    assert [s["label"] for s in result["sizes"]] == ["10MB", "30MB"]
    for size in result["sizes"]:
        assert size["database_bytes"] > 0
        assert set(size["methods"]) == METHODS
        for entry in size["methods"].values():
            assert set(entry["seconds"]) >= {"p50", "p95", "n"}
            assert len(entry["samples"]) == entry["seconds"]["n"] == 1
            assert all(s["seconds"] > 0 and "bytes_added" in s for s in entry["samples"])
    density = result["density"]
    assert density["branches_running"] == 3
    assert density["memory_per_branch_pss_bytes"] > 0
    assert density["branch_ready_at_n_seconds"]["n"] == 2
    for name in ("compare_small_time.png", "compare_small_disk.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| method |" in (tmp_path / "compare_small.md").read_text()
