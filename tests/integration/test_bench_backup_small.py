"""The backup benchmark's small mode still runs end to end (no speed asserted):
Cygnet and pgBackRest back up the same live cluster, both restore, checksums match."""

from __future__ import annotations

import shutil

import pytest

from tests.harness import run_small_benchmark

pytestmark = pytest.mark.integration


def test_bench_backup_branches_small() -> None:
    if shutil.which("pgbackrest") is None:
        pytest.skip("pgbackrest is not installed (scripts/setup installs it)")
    result = run_small_benchmark("bench_backup_branches", "--scale", "2")
    full, restore = result["full"], result["restore"]
    for side in (full["cygnet"], full["pgbackrest"], full["pgbackrest_parallel"],
                 restore, restore["pgbackrest"], restore["pgbackrest_parallel"]):
        assert side["seconds"] > 0 and side["bytes_written"] > 0, side
    assert restore["checksums_equal"] is True
    assert result["incremental_1pct"]["cygnet"]["bytes_written"] > 0
    assert result["branches"]["count"] == 3 and result["verify"]["ok"] is True
    assert set(result["targets"]) >= {"full_backup_as_fast_as_pgbackrest",
                                      "full_backup_as_small_as_pgbackrest",
                                      "restore_as_fast_as_pgbackrest",
                                      "incremental_smaller_than_pgbackrest"}
