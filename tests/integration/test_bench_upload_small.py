"""The upload benchmark's small mode still runs end to end (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_small_benchmark

pytestmark = pytest.mark.integration


def test_bench_upload_small(tmp_path: Path) -> None:
    result = run_small_benchmark("bench_upload", "--out", str(tmp_path), timeout=300)
    assert json.loads((tmp_path / "upload_small.json").read_text()) == result
    assert result["repository_bytes"] > 5 << 20 and result["objects"] >= 3
    assert set(result["seconds"]) == {"cygnet", "boto3_upload_file", "cygnet_fetch",
                                      "boto3_download_file"}
    assert all(s["n"] == 1 and s["p50"] > 0 for s in result["seconds"].values())
    assert result["ratio_cygnet_to_boto3"] > 0 and result["ratio_fetch_to_boto3_download"] > 0
