"""bench_seed's small mode still runs end to end: zfs send against pg_basebackup
(both seeds complete, the replica streams; no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.integration


def test_bench_seed_small(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_seed", "--small",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert json.loads((tmp_path / "seed_small.json").read_text()) == result
    assert result["zfs_send"]["state"] == "streaming"
    assert result["zfs_send"]["bytes"] > result["database_bytes"] / 2
    assert result["pg_basebackup"]["bytes"] > result["database_bytes"] / 2
