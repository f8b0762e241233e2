"""The handoff library in real postmasters: a client's TCP socket handed over a
unix socket is served by Postgres as its own client; anything else is refused
and the postmaster serves on (native/handoff/cygnet_handoff.c)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from pathlib import Path

import psycopg
import pytest

from cygnet.postgres import handoff, process, sql
from cygnet.postgres.fixup import prepare_clone
from cygnet.postgres.handoff import Handoff, hand_over
from cygnet.postgres.initdb import init_cluster
from cygnet.postgres.layout import ClusterLayout
from cygnet.postgres.versions import installed_versions, resolve_version
from tests.integration import pg_helpers
from tests.integration.pg_helpers import Cluster, PgEnv, client_port

pytestmark = pytest.mark.integration

# Fixtures shared through pg_helpers (no conftest.py in this layer's files).
pg_template = pg_helpers.pg_template
pg_env = pg_helpers.pg_env

PASSWORD = "handoff-test-pw"
SSL_REQUEST = struct.pack("!II", 8, 80877103)


def _started(pg_env: PgEnv, name: str) -> Cluster:
    cluster = pg_env.new_cluster(name)
    cluster.start()
    asyncio.run(sql.set_password(cluster.socket_dir, cluster.port, "postgres", PASSWORD))
    return cluster


def _handoff_path(cluster: Cluster) -> Path:
    path = handoff.socket_path(cluster.socket_dir, cluster.port)
    assert path is not None
    return path


class FakeEndpoint:
    """Accepts one client on a TCP port and hands it to `cluster`, answering its
    SSLRequest 'N' first when it sends one, as the endpoint answers 'S'."""

    def __init__(self, cluster: Cluster) -> None:
        self.path = _handoff_path(cluster)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.outcome: Handoff | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        with client:
            prefix = b""
            if client.recv(8, socket.MSG_PEEK) == SSL_REQUEST:
                prefix = client.recv(8)
                client.sendall(b"N")
            self.outcome = asyncio.run(hand_over(self.path, client, prefix,
                                                 swallow=1 if prefix else 0))
        self.listener.close()

    def connect(self, sslmode: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                               password=PASSWORD, dbname="postgres", sslmode=sslmode,
                               connect_timeout=10, autocommit=True)


@pytest.mark.parametrize("sslmode", ["disable", "prefer"])
def test_a_handed_over_client_talks_to_postgres_directly(pg_env: PgEnv, sslmode: str) -> None:
    cluster = _started(pg_env, "a")
    endpoint = FakeEndpoint(cluster)
    with endpoint.connect(sslmode) as conn:
        row = conn.execute("SELECT inet_client_port(), inet_server_port(), "
                           "current_setting('port')::int, 40 + 2").fetchone()
        # The backend's peer is the client itself: no relay between them.
        assert row == (client_port(conn), endpoint.port, cluster.port, 42)
    endpoint.thread.join(10)
    assert endpoint.outcome is Handoff.TAKEN


@pytest.mark.parametrize("version", sorted(installed_versions()))
def test_every_installed_major_takes_a_handoff(pg_env: PgEnv, version: str) -> None:
    """The library wraps libc, not Postgres: one build serves every major."""
    _, bindir = resolve_version(version)
    name = f"v{version}"
    cluster = Cluster(ClusterLayout(pg_env.base / name),
                      pg_env.settings(name, major=int(version)), bindir)
    pg_env.clusters.append(cluster)
    cluster.layout.mount.mkdir(mode=0o755)
    asyncio.run(init_cluster(bindir, cluster.pgdata, cluster.layout.log_file, sync=False))
    prepare_clone(cluster.pgdata, cluster.layout.log_file, cluster.settings)
    cluster.start()
    asyncio.run(sql.set_password(cluster.socket_dir, cluster.port, "postgres", PASSWORD))
    endpoint = FakeEndpoint(cluster)
    with endpoint.connect("prefer") as conn:  # an SSLRequest replayed, its answer swallowed
        row = conn.execute("SELECT inet_client_port(), current_setting('server_version_num')"
                           ).fetchone()
        assert row is not None and row[0] == client_port(conn)
        assert str(row[1]).startswith(version)
    endpoint.thread.join(10)
    assert endpoint.outcome is Handoff.TAKEN


def _send_raw(path: Path, payload: bytes, fd: int) -> bytes:
    """Sends `payload` with `fd` attached and returns the postmaster's answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as link:
        link.settimeout(10)
        link.connect(str(path))
        link.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
        try:
            return link.recv(1)
        except ConnectionResetError:
            return b""


def test_what_is_not_a_handoff_is_refused_and_the_postmaster_serves_on(
        pg_env: PgEnv) -> None:
    cluster = _started(pg_env, "b")
    path = _handoff_path(cluster)
    a, b = socket.socketpair()
    with a, b:
        # A unix socket would reach the peer-authenticated rules: never taken.
        assert _send_raw(path, handoff.message(b"", 0), a.fileno()) == b""
    with socket.create_server(("127.0.0.1", 0)) as listening:  # TCP, but no client
        assert _send_raw(path, handoff.message(b"", 0), listening.fileno()) == b""
    with socket.create_connection(("127.0.0.1", cluster.port)) as tcp:
        assert _send_raw(path, b"XXXX\0\0", tcp.fileno()) == b""  # not the magic
        assert _send_raw(path, handoff.MAGIC + b"\0\x09" + b"x" * 8, tcp.fileno()) == b""
    assert asyncio.run(sql.query_one(cluster.socket_dir, cluster.port, "SELECT 7")) == (7,)
    endpoint = FakeEndpoint(cluster)
    with endpoint.connect("disable") as conn:
        assert conn.execute("SELECT 8").fetchone() == (8,)
    assert "could not accept new connection" in cluster.layout.log_file.read_text()


def test_a_postmaster_without_the_library_refuses_and_the_client_stays_ours(
        pg_env: PgEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "preload_env", lambda: {})
    cluster = _started(pg_env, "c")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with client, accepted:
            outcome = asyncio.run(hand_over(_handoff_path(cluster), accepted, b"", 0))
            assert outcome is Handoff.REFUSED
            accepted.sendall(b"still ours")
            assert client.recv(16) == b"still ours"
    assert "invalid length of startup packet" in cluster.layout.log_file.read_text()


def test_no_handoff_listener_is_refused_at_once(tmp_path: Path) -> None:
    with socket.socket() as client:
        assert asyncio.run(hand_over(tmp_path / "none", client, b"", 0)) is Handoff.REFUSED


def test_children_that_exec_do_not_load_the_library(pg_env: PgEnv) -> None:
    cluster = _started(pg_env, "d")
    pm = process.find_live_postmaster(cluster.pgdata)
    assert pm is not None
    assert str(handoff.LIBRARY) in Path(f"/proc/{pm.pid}/maps").read_text()
    out = cluster.pgdata / "child-env.txt"

    async def copy_to_env() -> None:
        async with await sql.connect(cluster.socket_dir, cluster.port) as conn:
            await conn.execute(f"COPY (SELECT 1) TO PROGRAM 'env > {out}'")

    asyncio.run(copy_to_env())
    env = out.read_text()
    assert "PATH=" in env and "LD_PRELOAD" not in env
