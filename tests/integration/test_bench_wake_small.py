"""benchmarks/bench_wake.py in its small mode, on the session daemon: it runs, and
its figures are whole (no timing is asserted)."""

from __future__ import annotations

import pytest

from benchmarks.bench_wake import measure
from tests.harness import Daemon

pytestmark = pytest.mark.integration


def test_bench_wake_small(daemon: Daemon) -> None:
    result = measure(daemon, rounds=1)
    for key in ("warm_connect_seconds", "start_rpc_seconds", "wake_rpc_seconds"):
        assert result[key]["n"] == 1 and result[key]["p50"] > 0
    assert result["running_pss_bytes"] > 0 and result["running_processes"] >= 5
    # A suspended branch has no process, hence no memory.
    assert (result["suspended_pss_bytes"], result["suspended_processes"]) == (0, 0)
    assert result["idle_check_us_per_running_branch"] > 0
