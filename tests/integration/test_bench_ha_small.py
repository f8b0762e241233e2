"""bench_ha's small mode still runs end to end: a switchover and a host loss on three
hosts, nothing acknowledged lost (timings printed by the benchmark, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_bench_ha_small(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_ha", "--small",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert json.loads((tmp_path / "ha_small.json").read_text()) == result
    assert result["acknowledged"] > 100 and result["acknowledged_lost"] == 0
    assert result["failover"]["from"] != result["failover"]["to"]
