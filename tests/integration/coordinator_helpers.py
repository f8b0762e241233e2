"""A throwaway PostgreSQL server for the coordinator's shared store.

One server per test module (from pg_helpers' session template); each test
gets a fresh database in it, so stores never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.api.v1 import coordinator_pb2_grpc as cpb_grpc
from cygnet.coordinator.models import Capacity, PoolInfo, Registration
from cygnet.coordinator.store import open_store
from cygnet.postgres import sql
from cygnet.postgres.config import ClusterSettings
from cygnet.postgres.fixup import prepare_clone
from cygnet.postgres.sizes import size_class
from tests.e2e.fleet import Coordinator, Pki
from tests.harness import free_port
from tests.integration.pg_helpers import Cluster, PgEnv, make_base

PASSWORD = "coord-" + secrets.token_hex(8)


class PgServer:
    def __init__(self, env: PgEnv) -> None:
        self.env = env
        # small, not nano: several coordinators each hold a few connections.
        settings = ClusterSettings(port=free_port(), listen_addresses="127.0.0.1",
                                   socket_dir=env.socket_base / "coord", size=size_class("small"))
        self.cluster: Cluster = env.adopt_dir("coord", settings)
        self.cluster.layout.mount.mkdir(mode=0o755)
        subprocess.run(["cp", "-a", str(env.template), str(self.cluster.pgdata)], check=True)
        prepare_clone(self.cluster.pgdata, self.cluster.layout.log_file, settings)
        self.cluster.start()
        asyncio.run(sql.set_password(self.cluster.socket_dir, self.cluster.port, "postgres",
                                     PASSWORD))

    def dsn(self, dbname: str = "postgres") -> str:
        return sql.connection_uri("127.0.0.1", self.cluster.port, "postgres", PASSWORD, dbname)

    def new_database(self) -> str:
        name = "coord_" + secrets.token_hex(4)
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)


@pytest.fixture(scope="module")
def pg_server(pg_template: tuple[Path, Path]) -> Iterator[PgServer]:
    template, bindir = pg_template
    env = PgEnv(make_base("/var/tmp/cygnet-pgtest-"), make_base("/tmp/cygs-"), template, bindir)
    try:
        yield PgServer(env)
    finally:
        env.cleanup()
        shutil.rmtree(env.base, ignore_errors=True)
        shutil.rmtree(env.socket_base, ignore_errors=True)


# --- cygnet-coordinator processes on one store --------------------------------------------

GB = 1024 * 1024 * 1024


def simulated_hosts(store_url: str, n: int, max_clusters: int, memory_gb: float = 4,
                    prefix: str = "sim") -> None:
    """Host rows as registrations write them, heartbeating now (no agent behind them).

    Their addresses are unix sockets that do not exist, so a new leader's catalog
    sync of each host fails at once instead of waiting for a timeout.
    """
    store = open_store(store_url)
    try:
        hosts = []
        for i in range(n):
            cap = Capacity((PoolInfo("tank", 100 * GB, 95 * GB),), int(memory_gb * GB), 0,
                           ("15",), 0)
            reg = Registration(f"{prefix}-{i}", f"unix:/nonexistent/{prefix}-{i}", "z1", {},
                               cap, max_clusters)
            hosts.append((reg, int(memory_gb * GB), max_clusters))
        store.load(iter(hosts), [])
        with store.transaction() as tx:
            tx.x("UPDATE hosts SET last_heartbeat = ?", time.time())
    finally:
        store.close()


def leader_pid(store_url: str) -> int:
    """The pid in the lease holder's name (host/pid/token), 0 if nobody leads."""
    store = open_store(store_url)
    try:
        with store.transaction() as tx:
            rows = tx.q(f"SELECT holder FROM leadership WHERE id = 1 AND lease_until > "
                        f"{store.now_sql}")
    finally:
        store.close()
    return int(str(rows[0][0]).split("/")[1]) if rows else 0


def wait_leader(store_url: str, timeout: float, other_than: int = 0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = leader_pid(store_url)
        if pid and pid != other_than:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"no coordinator took the lead within {timeout}s")


def reservations(store_url: str) -> list[tuple[str, str, str]]:
    """(id, host_id, request_id) of every reservation in the store."""
    store = open_store(store_url)
    try:
        with store.transaction() as tx:
            rows = tx.q("SELECT id, host_id, request_id FROM databases WHERE state = 'reserved'")
        counts = {h.id: h.db_count for h in store.list_hosts()}
    finally:
        store.close()
    got = [(str(a), str(b), str(c)) for a, b, c in rows]
    for host_id, count in counts.items():
        assert count == sum(1 for r in got if r[1] == host_id), f"{host_id}'s counter drifted"
    return got


def coordinators(base: Path, store_url: str, n: int, *extra: str) -> list[Coordinator]:
    """`n` cygnet-coordinator processes on one store (heartbeats never run stale)."""
    pki_dir = base / "pki"
    fleet_pki = Pki(pki_dir) if (pki_dir / "ca.pem").exists() else Pki.create(pki_dir)
    procs = [Coordinator(base / f"c{i}", fleet_pki, store_url,
                         extra_args=["--heartbeat-interval", "3600", *extra])
             for i in range(n)]
    for c in procs:
        c.start()
    return procs


RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class LedgerClient:
    """Places with request ids over a list of coordinators, following whichever answers."""

    def __init__(self, stubs: list[cpb_grpc.CoordinatorStub], tag: str) -> None:
        self.stubs, self.tag = stubs, tag
        self.ledger: dict[str, str] = {}
        self.answered: list[float] = []  # time.monotonic() of each answer
        self.at = 0
        self.moves = 0

    def place(self, n: int) -> None:
        request_id = f"{self.tag}-{n}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                got = self.stubs[self.at].PlaceDatabase(cpb.PlaceDatabaseRequest(
                    size_class="nano", request_id=request_id), timeout=10)
            except grpc.RpcError as exc:
                if exc.code() not in RETRY:
                    raise
                self.at = (self.at + 1) % len(self.stubs)
                self.moves += 1
                time.sleep(0.05)
                continue
            assert request_id not in self.ledger
            self.ledger[request_id] = got.reservation_id
            self.answered.append(time.monotonic())
            return
        raise AssertionError(f"{request_id}: no coordinator answered")


@contextlib.contextmanager
def placing(clients: list[LedgerClient], join_timeout: float = 120) -> Iterator[None]:
    """Each client places in a loop of its own thread until the block ends."""
    stop = threading.Event()

    def load(client: LedgerClient) -> None:
        n = 0
        while not stop.is_set():
            client.place(n)
            n += 1

    threads = [threading.Thread(target=load, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(join_timeout)
