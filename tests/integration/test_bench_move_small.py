"""bench_move's small mode still runs end to end: each database moves under pgbench
writes with no acknowledged commit lost and its tables unchanged (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.integration


def test_bench_move_small(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_move", "--small",
                           "--sizes", "10", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert json.loads((tmp_path / "move_small.json").read_text()) == result
    [one] = result["sizes"]
    assert one["lost"] == 0 and one["checksums_equal"] and one["balances_agree"], one
    assert one["client_downtime_seconds"] > 0 and one["moved_bytes"] > one["database_bytes"] / 2
