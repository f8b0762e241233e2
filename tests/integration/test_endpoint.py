"""The host's Postgres endpoint: real cygnetd, real Postgres, real libpq clients.

One private daemon with an endpoint domain (names routed by TLS SNI); clients
dial NAME.DOMAIN with hostaddr=127.0.0.1, as DNS would have them do, and
check the certificate with verify-full against the host's CA.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg.abc import Query

from benchmarks import bench_endpoint
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.endpoint.relay_link import relay_pid
from cygnet.postgres.versions import resolve_version
from tests.conftest import unique
from tests.harness import Daemon, private_daemon
from tests.integration.pg_helpers import client_port
from tests.integration.test_cli_support import cygnet

pytestmark = pytest.mark.integration

DOMAIN = "pg.cygnet.test"


@dataclass
class Site:
    daemon: Daemon
    db: str
    main: pb.Connection
    feat: pb.Connection  # branch "feat" of db
    feat_branch: pb.Branch

    @property
    def ca(self) -> str:
        return self.main.sslrootcert


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with private_daemon("ep", 57400, "3G", settings=f'endpoint_domain = "{DOMAIN}"\n') as d:
        db = unique("ep")
        with d.stub() as s:
            made = s.CreateDatabase(pb.CreateDatabaseRequest(name=db, size_class="nano"),
                                    timeout=120)
            feat = s.CreateBranch(pb.CreateBranchRequest(database=db, name="feat"),
                                  timeout=120)
            yield Site(d, db, made.connection, feat.connection, feat.branch)


def _connect(site: Site, host: str, *, password: str | None = None, sslmode: str = "verify-full",
             **extra: str) -> psycopg.Connection[tuple[object, ...]]:
    info = psycopg.conninfo.make_conninfo(
        host=host, hostaddr="127.0.0.1", port=site.daemon.endpoint_port, user="postgres",
        password=site.main.password if password is None else password, dbname="postgres",
        sslmode=sslmode, sslrootcert=site.ca, **{"connect_timeout": "10", **extra})
    return psycopg.connect(info, autocommit=True)


def raw_error(site: Site, server_name: str | None, params: dict[str, str] | None = None,
              tls: bool = True) -> dict[str, str]:
    """The ErrorResponse fields the endpoint answers a startup with (libpq hides the SQLSTATE
    of connection failures), read by a minimal client of our own over verified TLS."""
    sock: socket.socket | ssl.SSLSocket = socket.create_connection(
        ("127.0.0.1", site.daemon.endpoint_port), timeout=10)
    try:
        if tls:
            sock.sendall(struct.pack("!II", 8, 80877103))
            assert sock.recv(1) == b"S"
            ctx = ssl.create_default_context(cafile=site.ca)
            ctx.check_hostname = server_name is not None
            sock = ctx.wrap_socket(sock, server_hostname=server_name)
        body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in
                        {"user": "postgres", "database": "postgres", **(params or {})}.items())
        body += b"\0"
        sock.sendall(struct.pack("!II", 8 + len(body), 3 << 16) + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    assert data[:1] == b"E", data[:50]
    fields = data[5:].split(b"\0")
    return {f[:1].decode(): f[1:].decode() for f in fields if f}


def _one(c: psycopg.Connection[tuple[object, ...]], sql: Query) -> object:
    row = c.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_sni_routes_to_the_branch_with_tls_and_scram_end_to_end(site: Site) -> None:
    with _connect(site, f"{site.db}--feat.{DOMAIN}", channel_binding="require") as c:
        # The branch's own Postgres answered: its port, its TLS session, SCRAM-PLUS
        # (channel binding needs the client's TLS to end at that very server).
        assert _one(c, "SHOW port") == str(site.feat.port)
        assert _one(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
    with _connect(site, f"{site.db}.{DOMAIN}") as c:
        assert _one(c, "SHOW port") == str(site.main.port)
    with _connect(site, f"{site.feat_branch.id}.{DOMAIN}") as c:
        assert _one(c, "SHOW port") == str(site.feat.port)


def _peer(c: psycopg.Connection[tuple[object, ...]]) -> tuple[object, ...]:
    """(the client port the backend sees, the server port it sees)."""
    row = c.execute("SELECT inet_client_port(), inet_server_port()").fetchone()
    assert row is not None
    return row


def test_sni_clients_are_handed_to_the_branch_postmaster(site: Site) -> None:
    """Once routed, nothing sits between client and backend: the backend's peer is
    the client's own socket, which the client opened to the endpoint's port."""
    with _connect(site, f"{site.db}--feat.{DOMAIN}", channel_binding="require") as c:
        assert _peer(c) == (client_port(c), site.daemon.endpoint_port)
        assert _one(c, "SHOW port") == str(site.feat.port)


def test_a_postmaster_that_cannot_take_a_client_gets_it_relayed(site: Site) -> None:
    """A postmaster without a handoff listener (one started before the handoff
    existed) is dialed, and the bytes relayed, as before."""
    made = bench_endpoint.relayed_branch(site.daemon, site.db)
    with _connect(site, f"{site.db}--relayed.{DOMAIN}", channel_binding="require") as c:
        seen_port, server_port = _peer(c)
        assert server_port == made.connection.port and seen_port != client_port(c)
    with site.daemon.stub() as s:
        s.DeleteBranch(pb.DeleteBranchRequest(branch=pb.BranchRef(
            database=site.db, name="relayed")), timeout=120)


def test_wrong_password_is_refused_by_the_branch(site: Site) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(site, f"{site.db}--feat.{DOMAIN}", password="not-the-password")


def test_unknown_endpoint_fails_at_once_with_a_postgres_error(site: Site) -> None:
    for host in (f"nope-{site.db}.{DOMAIN}", f"{site.db}--nope.{DOMAIN}"):
        with pytest.raises(psycopg.OperationalError, match="does not exist on this host"):
            _connect(site, host)  # verify-full passes: *.DOMAIN names it
        error = raw_error(site, host)
        assert error["C"] == "3D000" and error["S"] == "FATAL", error


def test_clients_without_sni_name_the_endpoint_in_options(site: Site) -> None:
    # TLS ends at the endpoint here; channel binding still holds because the endpoint
    # presents the very certificate the branch's Postgres does.
    info = psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=site.daemon.endpoint_port, user="postgres",
        password=site.main.password, dbname="postgres", sslmode="verify-full",
        sslrootcert=site.ca, connect_timeout=10,
        options=f"-c endpoint={site.db}--feat -c search_path=public", channel_binding="require")
    with psycopg.connect(info, autocommit=True) as c:
        assert _one(c, "SHOW port") == str(site.feat.port)
        assert _one(c, "SHOW search_path") == "public"  # the other options reach Postgres
        big = _one(c, "SELECT length(string_agg(md5(i::text), '')) "
                      "FROM generate_series(1, 100000) i")
        assert big == 3_200_000
    with pytest.raises(psycopg.OperationalError, match="does not exist on this host"):
        psycopg.connect(info.replace(f"{site.db}--feat", "nothing-here"), autocommit=True)
    assert raw_error(site, None, {"options": "endpoint=nothing-here"})["C"] == "3D000"
    unnamed = psycopg.conninfo.make_conninfo(info, options="")
    with pytest.raises(psycopg.OperationalError, match="no endpoint named"):
        psycopg.connect(unnamed, autocommit=True)
    assert raw_error(site, None)["C"] == "08004"


def test_plain_tcp_is_refused_with_a_reason(site: Site) -> None:
    with pytest.raises(psycopg.OperationalError, match="TLS connections only"):
        _connect(site, f"{site.db}.{DOMAIN}", sslmode="disable")
    assert raw_error(site, None, tls=False)["C"] == "28000"


def test_large_results_move_through_the_relay_intact(site: Site) -> None:
    with _connect(site, f"{site.db}--feat.{DOMAIN}") as c:
        rows = c.execute("SELECT i, md5(i::text) FROM generate_series(1, 200000) i").fetchall()
        assert len(rows) == 200000
        assert rows[12345] == (12346, _one(c, "SELECT md5('12346')"))
        payload = "x" * 5_000_000
        assert _one(c, psycopg.sql.SQL("SELECT length({})").format(payload)) == 5_000_000


def test_the_endpoint_string_survives_reset_and_stop_start(site: Site) -> None:
    with site.daemon.stub() as s:
        conn = s.GetConnection(pb.GetConnectionRequest(
            branch=pb.BranchRef(database=site.db, name="feat")), timeout=30)
    uri = conn.endpoint_uri
    assert urlsplit(uri).hostname == f"{site.db}--feat.{DOMAIN}"
    assert parse_qs(urlsplit(uri).query)["sslmode"] == ["verify-full"]
    with psycopg.connect(uri, hostaddr="127.0.0.1", autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS kept (v int); INSERT INTO kept VALUES (1)")
    with site.daemon.stub() as s:
        ref = pb.BranchRef(database=site.db, name="feat")
        s.ResetBranch(pb.ResetBranchRequest(branch=ref), timeout=120)
    with psycopg.connect(uri, hostaddr="127.0.0.1", autocommit=True) as c:
        # Reset to the parent's state: the table made on the branch is gone.
        assert _one(c, "SELECT to_regclass('kept') IS NULL") is True


def test_direct_tls_of_postgresql_17_clients_by_options(site: Site) -> None:
    """libpq 17 may skip the SSLRequest (sslnegotiation=direct): TLS at once, and the
    server must choose ALPN "postgresql", which the endpoint's own TLS does."""
    _, bindir = resolve_version("17")
    info = psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=site.daemon.endpoint_port, user="postgres", dbname="postgres",
        sslmode="verify-full", sslrootcert=site.ca, sslnegotiation="direct",
        connect_timeout=10, options=f"endpoint={site.db}--feat", channel_binding="require")
    run = subprocess.run([str(bindir / "psql"), "-X", "-At", "-c", "SHOW port", info],
                         env={**os.environ, "PGPASSWORD": site.main.password},
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(site.feat.port)


def _connect_by_options(site: Site, endpoint: str, **extra: str
                        ) -> psycopg.Connection[tuple[object, ...]]:
    """A client without SNI (an IP address as the host) naming the endpoint in options."""
    return _connect(site, "127.0.0.1", options=f"endpoint={endpoint}", **extra)


def test_relayed_connections_survive_a_cygnetd_restart(site: Site) -> None:
    """The bytes move in the relay process, which outlives cygnetd: sessions opened
    before a restart, by SNI and by options=endpoint= (TLS terminated in the relay
    process), answer after it in the same backends, and new connections are routed
    by the new cygnetd through the same relay process."""
    control = site.daemon.base / "run" / "endpoint-relay.sock"
    relay = relay_pid(control)
    assert relay is not None
    with _connect(site, f"{site.db}--feat.{DOMAIN}") as kept, \
            _connect_by_options(site, f"{site.db}--feat",
                                channel_binding="require") as by_options, \
            ThreadPoolExecutor(2) as pool:
        backend = _one(kept, "SELECT pg_backend_pid()")
        options_backend = _one(by_options, "SELECT pg_backend_pid()")
        site.daemon.stop()
        assert _one(kept, "SELECT pg_backend_pid()") == backend  # cygnetd is down
        assert _one(by_options, "SELECT pg_backend_pid()") == options_backend
        # A client that connects now waits on the listening socket the relay keeps,
        # and is answered once cygnetd is back.
        def port_once_back(options: bool) -> object:
            with (_connect_by_options(site, site.db, connect_timeout="60") if options
                  else _connect(site, f"{site.db}.{DOMAIN}", connect_timeout="60")) as c:
                return _one(c, "SHOW port")

        meanwhile = [pool.submit(port_once_back, options) for options in (False, True)]
        time.sleep(0.5)
        assert not any(f.done() for f in meanwhile)
        site.daemon.start()
        assert [f.result(60) for f in meanwhile] == [str(site.main.port)] * 2
        assert _one(kept, "SELECT pg_backend_pid()") == backend
        assert _one(by_options, "SELECT pg_backend_pid()") == options_backend
        big = _one(by_options, "SELECT length(repeat('x', 3000000))")
        assert big == 3_000_000
        assert relay_pid(control) == relay
        with _connect(site, f"{site.db}.{DOMAIN}") as fresh:
            assert _one(fresh, "SHOW port") == str(site.main.port)
    cmdline = Path(f"/proc/{relay}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "cygnet.endpoint.relayd" in cmdline and site.main.password not in cmdline


def test_a_cygnetd_killed_with_9_leaves_sessions_up_and_new_clients_waiting(
        site: Site) -> None:
    """The relay holds copies of the listening sockets from cygnetd's start, not
    only from a clean stop: after kill -9 a new client waits instead of being
    refused, and the next cygnetd answers it."""
    with _connect(site, f"{site.db}--feat.{DOMAIN}") as kept, \
            _connect_by_options(site, site.db) as by_options, \
            ThreadPoolExecutor(1) as pool:
        backend = _one(kept, "SELECT pg_backend_pid()")
        options_backend = _one(by_options, "SELECT pg_backend_pid()")
        site.daemon.kill9()
        try:
            def port_once_back() -> object:
                with _connect(site, f"{site.db}.{DOMAIN}", connect_timeout="60") as c:
                    return _one(c, "SHOW port")

            meanwhile = pool.submit(port_once_back)
            time.sleep(1.0)
            assert not meanwhile.done(), meanwhile.exception()
            assert _one(kept, "SELECT pg_backend_pid()") == backend
            assert _one(by_options, "SELECT pg_backend_pid()") == options_backend
        finally:
            site.daemon.start()
        assert meanwhile.result(60) == str(site.main.port)
        assert _one(kept, "SELECT pg_backend_pid()") == backend
        assert _one(by_options, "SELECT pg_backend_pid()") == options_backend


def test_psql_through_the_endpoint(site: Site) -> None:
    with site.daemon.stub() as s:
        conn = s.GetConnection(pb.GetConnectionRequest(
            branch=pb.BranchRef(database=site.db)), timeout=30)
    env = {**os.environ, "PGHOSTADDR": "127.0.0.1", "PGCONNECT_TIMEOUT": "10"}
    out = subprocess.run(["psql", conn.endpoint_uri, "-tAc", "SHOW port"], env=env,
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(site.main.port)
    missing = subprocess.run(["psql", conn.endpoint_uri.replace(site.db, "x" + site.db), "-c",
                              "select 1"], env=env, capture_output=True, text=True, timeout=30,
                             check=False)
    assert missing.returncode == 2 and "does not exist on this host" in missing.stderr


def test_clients_beyond_max_connections_get_53300(site: Site) -> None:
    held: list[psycopg.Connection[tuple[object, ...]]] = []
    try:
        with pytest.raises(psycopg.OperationalError, match="too many clients already"):
            for _ in range(40):  # nano: max_connections 20
                held.append(_connect(site, f"{site.db}--feat.{DOMAIN}"))
        assert 15 <= len(held) <= 20
        # Passed through from the branch's own Postgres: SQLSTATE 53300.
        assert raw_error(site, f"{site.db}--feat.{DOMAIN}")["C"] == "53300"
    finally:
        for c in held:
            c.close()


def test_cancel_requests_reach_the_branch(site: Site) -> None:
    """Both kinds: libpq's plain CancelRequest (routed by the backend's pid) and
    PostgreSQL 17's encrypted one (TLS with SNI, relayed like any connection)."""
    with _connect(site, f"{site.db}--feat.{DOMAIN}") as c:
        for cancel in (c.cancel, c.cancel_safe):
            timer = threading.Timer(0.5, cancel)
            timer.start()
            # Without the cancel the sleep would end without an error.
            with pytest.raises(psycopg.errors.QueryCanceled):
                c.execute("SELECT pg_sleep(30)")
            timer.join()


def test_cygnet_connect_prints_the_endpoint_string(site: Site) -> None:
    out = cygnet(site.daemon, "connect", f"{site.db}/feat").out.strip()
    assert urlsplit(out).hostname == f"{site.db}--feat.{DOMAIN}"
    assert urlsplit(out).port == site.daemon.endpoint_port
    direct = cygnet(site.daemon, "connect", f"{site.db}/feat", "--direct").out.strip()
    assert urlsplit(direct).port == site.feat.port


def test_without_a_domain_the_string_names_the_host_and_options(daemon: Daemon) -> None:
    """The session daemon has no endpoint_domain: `cygnet connect` output works as it is."""
    db = unique("epd")
    with daemon.stub() as s:
        s.CreateDatabase(pb.CreateDatabaseRequest(name=db, size_class="nano"), timeout=120)
        try:
            uri = cygnet(daemon, "connect", db).out.strip()
            assert parse_qs(urlsplit(uri).query)["options"] == [f"endpoint={db}"]
            with psycopg.connect(uri, autocommit=True, connect_timeout=10) as c:
                assert _one(c, "SELECT current_setting('ssl')") == "on"
        finally:
            s.DeleteDatabase(pb.DeleteDatabaseRequest(database=db), timeout=120)


def _suspended_branch(site: Site, name: str) -> pb.Branch:
    with site.daemon.stub() as s:
        made = s.CreateBranch(pb.CreateBranchRequest(database=site.db, name=name), timeout=120)
        ref = pb.BranchRef(branch_id=made.branch.id)
        suspended: pb.Branch = s.SuspendBranch(pb.SuspendBranchRequest(branch=ref), timeout=60)
        return suspended


def _connect_once(site: Site, host: str) -> str:
    """What one storm client ends with: its postmaster's start time, or the error."""
    try:
        with _connect(site, host, connect_timeout="60") as c:
            return str(_one(c, "SELECT pg_postmaster_start_time()"))
    except psycopg.OperationalError as exc:
        return f"error: {exc}"


def test_a_connect_storm_wakes_a_suspended_branch_once(site: Site) -> None:
    branch = _suspended_branch(site, "storm")
    assert branch.state == pb.BRANCH_STATE_SUSPENDED
    host = f"{site.db}--storm.{DOMAIN}"
    log_before = site.daemon.log_path.read_text(errors="replace").count("storm")
    with ThreadPoolExecutor(200) as pool:
        outcomes = list(pool.map(lambda _: _connect_once(site, host), range(200)))
    started = {o for o in outcomes if not o.startswith("error")}
    errors = [o for o in outcomes if o.startswith("error")]
    # One postmaster served every client that got in: it was started once.
    assert len(started) == 1, started
    # nano allows 20 connections: the clients beyond it get Postgres' own 53300
    # ("too many clients already"), straight from the branch, nothing else.
    assert all("too many clients already" in e for e in errors), set(errors)
    assert len(outcomes) - len(errors) >= 17
    log = site.daemon.log_path.read_text(errors="replace")
    assert log.count(f"branch {site.db}/storm ({branch.id}) running on port") == 1, \
        log.count("storm") - log_before
    with site.daemon.stub() as s:
        now = s.GetBranch(pb.GetBranchRequest(branch=pb.BranchRef(branch_id=branch.id)),
                          timeout=30)
    assert now.state == pb.BRANCH_STATE_RUNNING


def test_a_failed_wake_tells_the_waiting_clients_why(site: Site) -> None:
    with site.daemon.stub() as s:
        made = s.CreateBranch(pb.CreateBranchRequest(database=site.db, name="held"),
                              timeout=120)
        ref = pb.BranchRef(branch_id=made.branch.id)
        s.StopBranch(pb.StopBranchRequest(branch=ref), timeout=60)
    host = f"{site.db}--held.{DOMAIN}"
    with ThreadPoolExecutor(5) as pool:
        outcomes = list(pool.map(lambda _: _connect_once(site, host), range(5)))
    assert all("stopped by an operator" in o for o in outcomes), outcomes
    error = raw_error(site, host)
    assert error["C"] == "57P03" and "cannot start" in error["M"], error


def test_bench_endpoint_small(site: Site) -> None:
    """benchmarks/bench_endpoint.py in its small mode, on this module's daemon."""
    workdir = site.daemon.base / "bench"  # pgbouncer runs as postgres: a path it can reach
    workdir.mkdir(mode=0o755)
    result = bench_endpoint.run(site.daemon, site.main, site.db, 3, workdir, DOMAIN)
    paths = result["paths"]
    assert set(paths) == {"direct", "endpoint", "endpoint_relay", "endpoint_options",
                          "pgbouncer"}
    for name, measured in paths.items():
        assert measured["transactions"] > 0 and measured["p50_ms"] > 0, name
        assert measured["connect_p50_ms"] > 0, name
        if name != "direct":
            assert measured["tps_vs_direct"] > 0 and "cpu_us_per_tx" in measured


def test_other_protocols_get_a_protocol_error(site: Site) -> None:
    with socket.create_connection(("127.0.0.1", site.daemon.endpoint_port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(1000)
        assert s.recv(1000) == b""  # and the endpoint hangs up
    assert data[:1] == b"E" and b"C08P01\0" in data, data


def test_the_database_endpoint_follows_a_promote(site: Site) -> None:
    """`DB` names main; after a promote main is on the promoted branch's data."""
    with site.daemon.stub() as s:
        made = s.CreateBranch(pb.CreateBranchRequest(database=site.db, name="next"),
                              timeout=120)
    with _connect(site, f"{site.db}--next.{DOMAIN}") as c:
        c.execute("CREATE TABLE promoted_marker (v int)")
    with _connect(site, f"{site.db}.{DOMAIN}") as c:
        assert _one(c, "SELECT to_regclass('promoted_marker') IS NULL") is True
    with site.daemon.stub() as s:
        s.PromoteBranch(pb.PromoteBranchRequest(
            branch=pb.BranchRef(branch_id=made.branch.id)), timeout=180)
    with _connect(site, f"{site.db}.{DOMAIN}") as c:
        assert _one(c, "SELECT to_regclass('promoted_marker') IS NOT NULL") is True
