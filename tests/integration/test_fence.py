"""cygnet_fence (native/fence) in a real Postgres: a primary stops writing at its lease deadline.

No cygnetd at all: the fence is the lease file and Postgres, as on a host whose
cygnetd was killed. One throwaway cluster per major tested, started as the
postgres user with the module preloaded and the lease file written by
agent/lease.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict, Unpack

import psycopg
import pytest

from cygnet.agent import lease
from tests.harness import free_port

pytestmark = pytest.mark.integration

PG_ROOT = Path("/usr/lib/postgresql")


def _majors() -> list[str]:
    return [m for m in ("15", "18") if (PG_ROOT / m / "lib" / "cygnet_fence.so").exists()]


class ConnectOptions(TypedDict, total=False):
    target_session_attrs: str


class Cluster:
    def __init__(self, root: Path, major: str) -> None:
        self.root, self.bindir = root, PG_ROOT / major / "bin"
        self.pgdata, self.lease = root / "data", root / "run" / "lease"
        self.failsafe = root / "run" / "failsafe-db"
        self.port = free_port()

    def as_postgres(self, *argv: str, check: bool = True) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=check,
                       capture_output=True, text=True)

    def init(self) -> None:
        self.as_postgres(str(self.bindir / "initdb"), "-D", str(self.pgdata), "-A", "trust",
                         "-U", "postgres")
        with (self.pgdata / "postgresql.conf").open("a") as f:
            f.write(f"port = {self.port}\nlisten_addresses = ''\n"
                    f"unix_socket_directories = '{self.root}'\n"
                    "shared_preload_libraries = 'cygnet_fence'\n"
                    f"cygnet_fence.deadline_file = '{self.lease}'\n"
                    f"cygnet_fence.failsafe_file = '{self.failsafe}'\n")

    def start(self, check: bool = True) -> None:
        self.as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-l",
                         str(self.root / "log"), "-w", "start", check=check)

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"),
                            "-D", str(self.pgdata), "-m", "immediate", "stop"],
                           capture_output=True)

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def connect(self, **kw: Unpack[ConnectOptions]) -> psycopg.Connection:
        return psycopg.connect(host=str(self.root), port=self.port, user="postgres",
                               dbname="postgres", autocommit=True, **kw)

    def renew(self, seconds: float) -> None:
        lease.write_deadline(self.lease, lease.now_ns() + int(seconds * 1e9))


@pytest.fixture(params=tuple(_majors()) or [pytest.param("none", marks=pytest.mark.skip(
    reason="cygnet_fence.so is not built (native/fence/build)"))])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # Not under pytest's tmp_path: the postgres user must reach it.
    root = Path(tempfile.mkdtemp(prefix="cygnet-fence-"))
    (root / "run").mkdir()
    shutil.chown(root, "postgres")
    os.chmod(root, 0o755)
    c = Cluster(root, request.param)
    try:
        c.init()
        c.renew(60)
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_until(pred: object, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


def test_expiry_ends_writes_and_in_flight_transactions(cluster: Cluster) -> None:
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE ledger (n int)")
        conn.execute("INSERT INTO ledger VALUES (1)")
    # A write transaction in flight across the deadline must not commit.
    inflight = cluster.connect()
    inflight.execute("BEGIN")
    inflight.execute("INSERT INTO ledger VALUES (2)")
    writer_errors: list[str] = []
    acked_after: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        n = 100
        while not stop.is_set():
            n += 1
            try:
                with cluster.connect() as c:
                    c.execute("INSERT INTO ledger VALUES (%s)", (n,))
                if lease.read_deadline(cluster.lease) <= lease.now_ns():
                    acked_after.append(n)
            except psycopg.Error as exc:
                writer_errors.append(str(exc))
                time.sleep(0.02)

    t = threading.Thread(target=writer)
    t.start()
    try:
        lease.expire(cluster.lease)
        _wait_until(lambda: not cluster.running())
    finally:
        stop.set()
        t.join()
    with pytest.raises(psycopg.Error):
        inflight.execute("COMMIT")
    assert not acked_after, f"commits acknowledged after the deadline: {acked_after}"
    assert (cluster.pgdata / lease.FENCED_MARKER).exists()
    assert "fenced" in (cluster.root / "log").read_text().lower() or writer_errors

    # Started again, even with a fresh lease: read-only until the fence is lifted.
    cluster.renew(60)
    cluster.start()
    with cluster.connect() as conn:
        assert conn.execute("SELECT count(*) FROM ledger WHERE n = 2").fetchone() == (0,)
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.Error, match="fenced"):
            conn.execute("INSERT INTO ledger VALUES (3)")
    with pytest.raises(psycopg.OperationalError):
        cluster.connect(target_session_attrs="read-write").close()

    # Lifted (the coordinator said this host still holds the primary): writes again.
    lease.unfence(cluster.pgdata)
    cluster.stop()
    cluster.start()
    with cluster.connect(target_session_attrs="read-write") as conn:
        conn.execute("INSERT INTO ledger VALUES (4)")


def test_stale_or_missing_lease_fences_at_start(cluster: Cluster) -> None:
    cluster.stop()
    # A lease left from another boot counts as expired, as does none at all.
    cluster.lease.write_text(f"00000000-0000-0000-0000-000000000000 {lease.now_ns() + 10**12}\n")
    cluster.start(check=False)  # it may stop before pg_ctl sees it ready
    _wait_until(lambda: not cluster.running())
    assert (cluster.pgdata / lease.FENCED_MARKER).exists()


def test_the_database_failsafe_deadline_holds_past_the_host_lease(cluster: Cluster) -> None:
    """The host's lease lapsed, but every replica confirmed this database (failsafe):
    it writes on until its own deadline passes, then fences as at a lease expiry."""
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE ledger (n int)")
    lease.write_deadline(cluster.failsafe, lease.now_ns() + int(3e9), 6.0)
    lease.expire(cluster.lease)
    time.sleep(0.5)  # the worker polls every 100 ms: it would have fenced by now
    with cluster.connect() as conn:
        conn.execute("INSERT INTO ledger VALUES (1)")
    assert cluster.running() and not (cluster.pgdata / lease.FENCED_MARKER).exists()
    _wait_until(lambda: not cluster.running())  # the database's own deadline passed
    assert (cluster.pgdata / lease.FENCED_MARKER).exists()
    assert lease.read_deadline(cluster.failsafe) < lease.now_ns()
