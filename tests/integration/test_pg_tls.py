"""Branches' Postgres traffic: TLS only over TCP, the host's certificate, its key outside pgdata."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from cygnet.agent.tls import ensure_certificates
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.postgres.layout import postgres_user
from tests.conftest import unique
from tests.harness import Daemon, query

pytestmark = pytest.mark.integration

OLD_HBA = ("local all all peer map=cygnet\n"
           "host all all 0.0.0.0/0 scram-sha-256\n")


@pytest.fixture(scope="module")
def created(daemon: Daemon) -> Iterator[pb.CreateDatabaseResponse]:
    name = unique("tls")
    with daemon.stub() as s:
        resp = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                                timeout=120)
        yield resp
        s.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)


def _connect(conn: pb.Connection, sslmode: str, sslrootcert: str = "",
             host: str = "") -> psycopg.Connection[tuple[object, ...]]:
    """Connects with the branch's credentials and the given TLS options (not its URI's)."""
    extra = {"sslrootcert": sslrootcert} if sslrootcert else {}
    info = psycopg.conninfo.make_conninfo(
        host=host or conn.host, port=conn.port, user=conn.user, password=conn.password,
        dbname=conn.dbname, connect_timeout=10, sslmode=sslmode, **extra)
    return psycopg.connect(info, autocommit=True)


def _uses_ssl(c: psycopg.Connection[tuple[object, ...]]) -> object:
    row = c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row is not None
    return row[0]


def _show(conn: pb.Connection, setting: str) -> str:
    return str(query(conn, f"SHOW {setting}")[0][0])


def test_uri_asks_for_verify_full_with_the_host_ca(daemon: Daemon,
                                                   created: pb.CreateDatabaseResponse) -> None:
    params = parse_qs(urlsplit(created.connection.uri).query)
    assert params["sslmode"] == ["verify-full"]
    ca = Path(params["sslrootcert"][0])
    assert ca == daemon.base / "state" / "postgres-tls" / "ca.pem"
    # Anyone on the host may read the CA (it is public), and it is the host CA.
    assert stat.S_IMODE(ca.stat().st_mode) == 0o644
    assert ca.read_bytes() == (daemon.base / "state" / "tls" / "ca.pem").read_bytes()
    # The URI as given connects, verified against that CA, over TLS.
    with psycopg.connect(created.connection.uri, connect_timeout=10) as c:
        assert _uses_ssl(c) is True


def test_clear_text_tcp_is_refused(created: pb.CreateDatabaseResponse) -> None:
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        _connect(created.connection, sslmode="disable")


def test_require_works(created: pb.CreateDatabaseResponse) -> None:
    with _connect(created.connection, sslmode="require") as c:
        assert _uses_ssl(c) is True


def test_verify_full_refuses_another_ca(created: pb.CreateDatabaseResponse,
                                        tmp_path: Path) -> None:
    other = ensure_certificates(tmp_path / "other", [])
    assert other.ca is not None
    with pytest.raises(psycopg.OperationalError, match=r"SSL error|certificate verify failed"):
        _connect(created.connection, "verify-full", str(other.ca))


def test_verify_full_by_name(daemon: Daemon, created: pb.CreateDatabaseResponse) -> None:
    ca = str(daemon.base / "state" / "postgres-tls" / "ca.pem")
    with _connect(created.connection, "verify-full", ca, host="localhost") as c:
        assert _uses_ssl(c) is True


def _assert_no_key_material(pgdata: Path) -> None:
    for root, _, names in os.walk(pgdata):
        for name in names:
            path = Path(root) / name
            assert path.suffix not in (".key", ".crt", ".pem"), path
            if path.stat().st_size < 65536 and not path.is_relative_to(pgdata / "base"):
                assert b"PRIVATE KEY" not in path.read_bytes(), path


def test_key_stays_outside_pgdata_and_its_clones(daemon: Daemon,
                                                 created: pb.CreateDatabaseResponse) -> None:
    conn = created.connection
    pgdata = Path(_show(conn, "data_directory"))
    key = Path(_show(conn, "ssl_key_file"))
    assert key.is_absolute() and not key.is_relative_to(pgdata)
    assert key == daemon.base / "state" / "postgres-tls" / "server.key"
    st = key.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == postgres_user().uid
    # Not the API listener's key: every branch's superuser can read what Postgres reads.
    assert key.read_bytes() != (daemon.base / "state" / "tls" / "server.key").read_bytes()
    _assert_no_key_material(pgdata)
    with daemon.stub() as s:
        child = s.CreateBranch(pb.CreateBranchRequest(database=created.database.name,
                                                      name="tls-child"), timeout=120)
    child_pgdata = Path(_show(child.connection, "data_directory"))
    assert child_pgdata != pgdata
    _assert_no_key_material(child_pgdata)
    assert _show(child.connection, "ssl") == "on"


def _listening(port: int) -> set[str]:
    """Local addresses with a TCP listener on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def test_listens_on_the_configured_address_only(created: pb.CreateDatabaseResponse) -> None:
    conn = created.connection
    assert _show(conn, "listen_addresses") == "127.0.0.1"
    # 127.0.0.1 in /proc's little-endian hex; no 0.0.0.0 or :: listener.
    assert _listening(conn.port) == {"0100007F"}


def test_data_from_before_tls_gets_it_at_next_start(
        daemon: Daemon, created: pb.CreateDatabaseResponse) -> None:
    name = created.database.name
    ref = pb.BranchRef(database=name, name="old-style")
    with daemon.stub() as s:
        made = s.CreateBranch(pb.CreateBranchRequest(database=name, name="old-style"),
                              timeout=120)
        pgdata = Path(_show(made.connection, "data_directory"))
        s.StopBranch(pb.StopBranchRequest(branch=ref), timeout=60)
        # What older versions wrote: clear-text TCP rules and ssl off.
        (pgdata / "pg_hba.conf").write_text(OLD_HBA)
        conf = pgdata / "cygnet.conf"
        conf.write_text(conf.read_text().replace("ssl = on", "ssl = off"))
        s.StartBranch(pb.StartBranchRequest(branch=ref), timeout=60)
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        _connect(made.connection, sslmode="disable")
    assert query(made.connection, "SELECT 1") == [(1,)]
    assert "hostssl" in (pgdata / "pg_hba.conf").read_text()


def _make_clear_text(pgdata: Path, pid: int) -> None:
    """What a postmaster started by an older cygnetd serves: ssl off, host rules."""
    (pgdata / "pg_hba.conf").write_text(OLD_HBA)
    conf = pgdata / "cygnet.conf"
    conf.write_text(conf.read_text().replace("ssl = on", "ssl = off"))
    os.kill(pid, signal.SIGHUP)


def _clear_text_accepted(conn: pb.Connection) -> bool:
    try:
        with _connect(conn, sslmode="disable") as c:
            return _uses_ssl(c) is False
    except psycopg.OperationalError as exc:
        assert "no encryption" in str(exc)
        return False


def _wait_for(want: bool, conn: pb.Connection) -> bool:
    """A reload is asynchronous: poll (bounded) until clear text is accepted or not."""
    deadline = time.monotonic() + 15
    while _clear_text_accepted(conn) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    return _clear_text_accepted(conn) == want


def test_adopted_postmaster_gets_tls_without_a_restart(
        daemon: Daemon, created: pb.CreateDatabaseResponse) -> None:
    conn = created.connection
    pgdata = Path(_show(conn, "data_directory"))
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    daemon.stop()
    try:
        _make_clear_text(pgdata, pid)
        assert _wait_for(True, conn), "the simulated older config never took effect"
    finally:
        daemon.start()
    assert _wait_for(False, conn), "clear text still accepted after adoption"
    assert int((pgdata / "postmaster.pid").read_text().split()[0]) == pid
    with psycopg.connect(conn.uri, connect_timeout=10) as c:
        assert _uses_ssl(c) is True
