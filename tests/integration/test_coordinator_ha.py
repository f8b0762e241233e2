"""Coordinator failover between real cygnet-coordinator processes on one PostgreSQL store.

A client holds the list of coordinator addresses and moves on when one stops
answering, retrying with the same request id: its ledger must match the
store exactly (no placement lost, none duplicated) across a kill -9 of the
leader. A SIGSTOPped leader keeps its database session, yet loses the lead
when its lease runs out, and cannot take it back when it wakes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cygnet.api.v1 import coordinator_pb2 as cpb
from tests.e2e.fleet import Coordinator, Pki
from tests.harness import VENV_BIN, free_port
from tests.integration import coordinator_helpers, pg_helpers
from tests.integration.coordinator_helpers import (
    LedgerClient,
    PgServer,
    coordinators,
    leader_pid,
    placing,
    reservations,
    simulated_hosts,
    wait_leader,
)

pytestmark = pytest.mark.integration
pg_template = pg_helpers.pg_template
pg_server = coordinator_helpers.pg_server

@pytest.fixture
def store_url(pg_server: PgServer) -> str:
    url = pg_server.new_database()
    simulated_hosts(url, 40, max_clusters=1000, memory_gb=256)
    return url


@contextlib.contextmanager
def running(tmp_path: Path, url: str, n: int) -> Iterator[list[Coordinator]]:
    procs = coordinators(tmp_path, url, n, "--lease-ttl", "1")
    try:
        yield procs
    finally:
        for c in procs:
            if c.proc is not None and c.proc.poll() is None:
                os.kill(c.proc.pid, signal.SIGCONT)
            c.stop()


def by_pid(procs: list[Coordinator], pid: int) -> Coordinator:
    return next(c for c in procs if c.proc is not None and c.proc.pid == pid)


def test_kill9_leader_under_load_loses_and_duplicates_nothing(
        tmp_path: Path, store_url: str) -> None:
    with running(tmp_path, store_url, 3) as procs, contextlib.ExitStack() as stack:
        old = wait_leader(store_url, 15)
        stubs = [stack.enter_context(c.stub()) for c in procs]
        # Clients start at the leader, so the kill hits requests in flight.
        start = procs.index(by_pid(procs, old))
        clients = [LedgerClient(stubs, f"c{i}") for i in range(4)]
        for c in clients:
            c.at = start
        with placing(clients, join_timeout=90):
            time.sleep(1.0)
            before = sum(len(c.ledger) for c in clients)
            os.kill(old, signal.SIGKILL)
            killed_at = time.monotonic()
            new = wait_leader(store_url, 30, other_than=old)
            print(f"takeover after kill -9: {time.monotonic() - killed_at:.2f}s")
            time.sleep(1.5)
        after = sum(len(c.ledger) for c in clients)
    assert new != old and after > before > 0
    assert sum(c.moves for c in clients) > 0  # the clients did have to move
    rows = reservations(store_url)
    ledger = {rid: res for c in clients for rid, res in c.ledger.items()}
    # Every answered placement is in the store, once, as answered; nothing else is.
    assert len({rid for _, _, rid in rows}) == len(rows), "a request id placed twice"
    assert {rid: res for res, _, rid in rows} == ledger


def test_sigstopped_leader_loses_the_lead_and_cannot_take_it_back(
        tmp_path: Path, store_url: str) -> None:
    with running(tmp_path, store_url, 2) as procs:
        old = wait_leader(store_url, 15)
        paused = by_pid(procs, old)
        other = next(c for c in procs if c is not paused)
        os.kill(old, signal.SIGSTOP)  # its session, and any session lock, stay alive
        new = wait_leader(store_url, 20, other_than=old)
        with other.stub() as stub:
            for _ in range(3):
                stub.PlaceDatabase(cpb.PlaceDatabaseRequest(size_class="nano"), timeout=10)
        os.kill(old, signal.SIGCONT)
        with paused.stub() as stub:
            for _ in range(3):
                # Answered from its old index it is fenced (UNAVAILABLE); or as a follower.
                with contextlib.suppress(grpc.RpcError):
                    stub.PlaceDatabase(cpb.PlaceDatabaseRequest(size_class="nano"), timeout=10)
        deadline = time.monotonic() + 10
        while "lost leadership" not in paused.tail(400):
            assert time.monotonic() < deadline, paused.tail()
            time.sleep(0.1)
        assert leader_pid(store_url) == new
        reservations(store_url)  # every host's counter matches its reservations


def test_cli_follows_the_coordinators_that_answer(tmp_path: Path, store_url: str) -> None:
    """`cygnet --coordinator A,B` keeps working when the leader A is killed: no change."""
    pki = Pki.create(tmp_path / "pki")
    procs = [Coordinator(tmp_path / f"c{i}", pki, store_url, [f"127.0.0.1:{free_port()}"],
                         ["--heartbeat-interval", "3600", "--lease-ttl", "1"])
             for i in range(2)]
    cert, key = pki.issue("client", "tester")
    try:
        for c in procs:
            c.start()
        leader = by_pid(procs, wait_leader(store_url, 15))
        other = next(c for c in procs if c is not leader)
        listed = ",".join(c.listen[0] for c in (leader, other))

        def cygnet(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(VENV_BIN / "cygnet"), "--coordinator", listed, "--ca", str(pki.ca),
                 "--cert", str(cert), "--key", str(key), *args],
                capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})

        before = cygnet("--json", "hosts", "list")
        assert before.returncode == 0, before.stderr
        assert len(json.loads(before.stdout)) == 40
        assert leader.proc is not None
        os.kill(leader.proc.pid, signal.SIGKILL)
        leader.proc.wait()
        drained = cygnet("hosts", "drain", "sim-0")
        assert drained.returncode == 0, drained.stderr
        after = cygnet("--json", "hosts", "list")
        assert after.returncode == 0, after.stderr
        assert {h["id"]: h["drained"] for h in json.loads(after.stdout)}["sim-0"] is True
        listed = leader.listen[0]  # the dead one alone: a clear failure, not a hang
        alone = cygnet("hosts", "list")
        assert alone.returncode != 0 and f"no coordinator answered ({listed})" in alone.stderr
    finally:
        for c in procs:
            c.stop()
