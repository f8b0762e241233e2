"""cygnetd's /metrics: operations and errors by code, branches by state, space, restarts."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

import cygnet
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.metrics.agent import POOL_HEALTH
from tests.e2e.fleet import Coordinator, Pki
from tests.harness import REPO, WORK, Daemon, FilePool, free_port, postmaster_pids

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metered() -> Iterator[tuple[Daemon, str]]:
    base = WORK / ("m" + secrets.token_hex(3))
    base.mkdir(parents=True)
    (base / "cygnetd.toml").write_text("metrics_interval = 0.5\n")
    port = free_port()
    pool = FilePool.create("2G")
    daemon = Daemon(pool, base, port_min=60200, extra_args=[
        "--config", str(base / "cygnetd.toml"), "--metrics-listen", f"127.0.0.1:{port}"])
    try:
        daemon.start()
        yield daemon, f"http://127.0.0.1:{port}/metrics"
    finally:
        daemon.stop()
        pool.destroy(daemon.mount_root)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def promtool_check_metrics(text: str) -> None:
    """promtool's linter (Debian's prometheus package, unpacked by scripts/setup)."""
    promtool = REPO / ".tools/bin/promtool"
    assert promtool.exists(), "promtool is missing: run scripts/setup"
    done = subprocess.run([str(promtool), "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def scrape(url: str) -> Samples:
    text = fetch(url)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def eventually(url: str, check: Callable[[Samples], bool], timeout: float = 20) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_operations_errors_branches_and_space(metered: tuple[Daemon, str]) -> None:
    daemon, url = metered
    name = "m-" + secrets.token_hex(3)
    with daemon.stub() as s:
        s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"), timeout=120)
        s.CreateBranch(pb.CreateBranchRequest(database=name, name="dev"), timeout=60)
        ref = pb.BranchRef(database=name, name="dev")
        s.ResetBranch(pb.ResetBranchRequest(branch=ref), timeout=60)
        with pytest.raises(grpc.RpcError) as missing:
            s.GetDatabase(pb.GetDatabaseRequest(database="nope-" + name))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError):
            s.CreateDatabase(pb.CreateDatabaseRequest(name="bad/name"))

    ag = {"service": "agent"}
    m = eventually(url, lambda m: value(m, "cygnet_branches", state="running") == 2)
    # Failed calls are timed too: the refused create is the second create_database.
    for op, calls in (("create_database", 2), ("create_branch", 1), ("reset_branch", 1)):
        assert value(m, "cygnet_operations_total", **ag, operation=op, code="OK") == 1, op
        assert value(m, "cygnet_operation_duration_seconds_count", **ag, operation=op) == calls
    # Failures are operations with a code other than OK: no second counter.
    assert value(m, "cygnet_operations_total", **ag, operation="get_database",
                 code="NOT_FOUND") == 1
    assert value(m, "cygnet_operations_total", **ag, operation="create_database",
                 code="INVALID_ARGUMENT") == 1
    assert not [n for n, _ in m if n.startswith("cygnet_operation_errors")]
    # A create takes a while, unlike the refusal, which never gets past validation.
    assert value(m, "cygnet_operation_duration_seconds_bucket", **ag,
                 operation="create_database", le="0.005") <= 1
    assert value(m, "cygnet_operation_duration_seconds_sum", **ag,
                 operation="create_database") > 0.05

    pool = daemon.pool.name
    size = value(m, "cygnet_pool_size_bytes", pool=pool)
    free = value(m, "cygnet_pool_free_bytes", pool=pool)
    assert 1e9 < size < 2.2e9 and 0 < free < size
    by_branches = value(m, "cygnet_pool_branches_used_bytes", pool=pool)
    assert 0 < by_branches <= value(m, "cygnet_pool_used_bytes", pool=pool)
    main = [v for (n, labels), v in m.items() if n == "cygnet_branch_referenced_bytes"
            and ("database", name) in labels and ("branch", "main") in labels]
    assert main and main[0] > 1e7  # a whole cluster's files
    assert value(m, "cygnet_metrics_refresh_ok") == 1
    assert value(m, "cygnet_databases") == 1
    # Health: a 0/1 gauge per pool, and a state set whose series never come and go.
    assert value(m, "cygnet_pool_healthy", pool=pool) == 1
    health = {dict(labels)["health"]: v for (n, labels), v in m.items()
              if n == "cygnet_pool_health" and ("pool", pool) in labels}
    assert set(POOL_HEALTH) <= set(health) and health["ONLINE"] == 1
    assert sum(health.values()) == 1
    info = [dict(labels) for (n, labels), v in m.items() if n == "cygnet_agent_info" and v == 1]
    assert info and info[0]["version"] == cygnet.__version__

    with daemon.stub() as s:
        s.DeleteBranch(pb.DeleteBranchRequest(branch=ref), timeout=60)
    m = eventually(url, lambda m: value(m, "cygnet_branches", state="running") == 1)
    assert value(m, "cygnet_branches", state="running") == 1
    assert value(m, "cygnet_operations_total", **ag, operation="delete_branch", code="OK") == 1


def test_postmaster_restart_is_counted(metered: tuple[Daemon, str]) -> None:
    daemon, url = metered
    name = "r-" + secrets.token_hex(3)
    before = postmaster_pids(daemon.mount_root)
    with daemon.stub() as s:
        s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"), timeout=120)
    # A short-lived `postgres` (a settings check) may still be around: wait for it.
    deadline = time.monotonic() + 10
    while len(new_pids := postmaster_pids(daemon.mount_root) - before) > 1:
        assert time.monotonic() < deadline, new_pids
        time.sleep(0.1)
    (new,) = new_pids
    start = value(scrape(url), "cygnet_postmaster_restarts_total")
    os.kill(new, signal.SIGKILL)
    m = eventually(url, lambda m: value(m, "cygnet_postmaster_restarts_total") > start, 30)
    assert value(m, "cygnet_postmaster_restarts_total") == start + 1


def test_suspended_branches_and_wakes_are_counted(metered: tuple[Daemon, str]) -> None:
    daemon, url = metered
    with daemon.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="z-" + secrets.token_hex(3),
                                                       size_class="nano"), timeout=120)
        main = pb.BranchRef(branch_id=db.main_branch.id)
        before = scrape(url)
        s.SuspendBranch(pb.SuspendBranchRequest(branch=main), timeout=60)
        m = eventually(url, lambda m: value(m, "cygnet_branches", state="suspended")
                       > value(before, "cygnet_branches", state="suspended"))
        assert value(m, "cygnet_branch_suspends_total") == \
            value(before, "cygnet_branch_suspends_total") + 1
        s.ResumeBranch(pb.ResumeBranchRequest(branch=main), timeout=60)
    m = eventually(url, lambda m: value(m, "cygnet_branch_wakes_total")
                   > value(before, "cygnet_branch_wakes_total"))
    assert value(m, "cygnet_branches", state="suspended") == \
        value(before, "cygnet_branches", state="suspended")


def test_metrics_are_off_by_default_and_bad_listen_is_refused(tmp_path: object) -> None:
    from cygnet.errors import InvalidArgument
    from cygnet.metrics.http import parse_listen, serve
    from cygnet.metrics.rpc import operation_name

    assert serve("", None) is None  # type: ignore[arg-type]
    assert parse_listen(":9433") == ("0.0.0.0", 9433)
    assert parse_listen("[::1]:9433") == ("::1", 9433)
    with pytest.raises(InvalidArgument):
        parse_listen("localhost")
    assert operation_name("/cygnet.v1.Agent/CreateDatabase") == "create_database"


def test_a_taken_metrics_port_refuses_the_start_cleanly(tmp_path: Path) -> None:
    """Both daemons exit 2 naming metrics_listen: no traceback, no server left behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        pool = FilePool.create("1G")
        daemon = Daemon(pool, tmp_path / "d", port_min=60300,
                        extra_args=["--metrics-listen", listen])
        coordinator = Coordinator(tmp_path / "c", Pki.create(tmp_path / "pki"),
                                  f"sqlite:///{tmp_path}/c.db",
                                  extra_args=["--metrics-listen", listen])
        try:
            for served in (daemon, coordinator):
                with contextlib.suppress(RuntimeError):  # the coordinator's socket may show first
                    served.start()
                assert served.proc is not None and served.proc.wait(30) == 2, served.tail()
                out = served.tail(200)
                assert f"metrics_listen: {listen}: Address already in use" in out, out
                assert "Traceback" not in out and "never awaited" not in out, out
        finally:
            daemon.stop()
            coordinator.stop()
            pool.destroy(daemon.mount_root)


def test_rules_and_dashboard_use_metrics_that_exist() -> None:
    """Every cygnet_* name in the alert rules and the dashboard is one the daemons export."""
    import re

    # Collectors live beside what they measure (metrics/, agent/lifecycle.py, ...).
    source = "".join(p.read_text() for p in (REPO / "daemon/cygnet").rglob("*.py"))
    exported = set(re.findall(r'"(cygnet_[a-z_]+)"', source))
    suffixes = ("_total", "_bucket", "_count", "_sum")
    for path in [*(REPO / "deploy/prometheus").glob("*.yml"),
                 *(REPO / "deploy/grafana").glob("*.json")]:
        for name in set(re.findall(r"\bcygnet_[a-z_]+", path.read_text())):
            base = next((name.removesuffix(s) for s in suffixes if name.endswith(s)), name)
            assert name in exported or base in exported, f"{path.name}: {name}"


def test_cygnetd_scrape_passes_promtool(metered: tuple[Daemon, str]) -> None:
    _, url = metered
    text = fetch(url)
    assert "cygnet_pool_health{" in text
    promtool_check_metrics(text)


def test_coordinator_scrape_passes_promtool(tmp_path: Path) -> None:
    port = free_port()
    coordinator = Coordinator(tmp_path / "c", Pki.create(tmp_path / "pki"),
                              f"sqlite:///{tmp_path}/c.db", extra_args=[
                                  "--metrics-listen", f"127.0.0.1:{port}"])
    try:
        coordinator.start()
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 20
        while True:
            try:
                text = fetch(url)
                break
            except OSError:
                assert time.monotonic() < deadline, coordinator.tail()
                time.sleep(0.1)
        assert "cygnet_coordinator_heartbeat_interval_seconds" in text
        assert "cygnet_coordinator_hosts{" in text
        promtool_check_metrics(text)
    finally:
        coordinator.stop()


def test_promtool_check_metrics_can_fail() -> None:
    with pytest.raises(AssertionError):
        promtool_check_metrics("# HELP cygnet_x_total a counter\n# TYPE cygnet_x_total gauge\n"
                               "cygnet_x_total 1\n")
