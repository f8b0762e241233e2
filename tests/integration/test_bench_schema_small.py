"""The schema diff benchmark's small mode still runs end to end (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.integration


def test_bench_schema_diff_small(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_schema_diff", "--small",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "schema_diff_small.json").read_text())
    assert json.loads(done.stdout) == result
    diff = result["diff"]
    assert diff["tables"] == 100 and diff["objects_in_a"] > 1000
    assert diff["oracle_dumps_equal"] is True
    assert diff["changes"] > 0 and diff["statements"] > 0
    for key in ("diff_seconds", "read_both_catalogs_seconds", "baseline_pg_dump_both_seconds"):
        assert diff[key]["n"] == 2 and diff[key]["p50"] > 0
