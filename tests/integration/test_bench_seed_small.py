"""bench_seed's small mode still runs end to end: zfs send against pg_basebackup
(both seeds complete, the replica streams; no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_small_benchmark

pytestmark = pytest.mark.integration


def test_bench_seed_small(tmp_path: Path) -> None:
    result = run_small_benchmark("bench_seed", "--out", str(tmp_path))
    assert json.loads((tmp_path / "seed_small.json").read_text()) == result
    assert result["zfs_send"]["state"] == "streaming"
    assert result["zfs_send"]["bytes"] > result["database_bytes"] / 2
    assert result["pg_basebackup"]["bytes"] > result["database_bytes"] / 2
