"""`cygnet --host` over the daemon's mutual-TLS listener, and retries that reuse the request id."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc
from tests.conftest import unique
from tests.harness import Daemon, fleet_pki
from tests.integration.test_cli_support import (
    CONNECTION_KEYS,
    INVALID,
    UNREACHABLE,
    assert_one_error_line,
    cli_env,
    cygnet,
)

pytestmark = pytest.mark.integration

SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")


def remote(daemon: Daemon, host: str = "127.0.0.1", client: str = "admin") -> list[str]:
    cert, key = fleet_pki().pair(client)
    return ["--host", f"{host}:{daemon.listen_port}", "--ca", str(daemon.server_ca),
            "--cert", str(cert), "--key", str(key)]


def test_remote_over_tls(daemon: Daemon) -> None:
    name = unique("clir")
    created = cygnet(None, *remote(daemon), "db", "create", name, "--size", "nano",
                     "--json").json()
    assert set(created["connection"]) == CONNECTION_KEYS
    # What the remote client made, the local socket sees, and the other way round.
    assert name in [d["name"] for d in cygnet(daemon, "db", "list", "--json").json()]
    cygnet(daemon, "branch", "create", f"{name}/local")
    tree = cygnet(None, *remote(daemon, "localhost"), "branch", "tree", name).out
    assert "local" in tree and "main" in tree
    cert, key = fleet_pki().pair("reader")
    env = cli_env(CYGNET_HOST=f"127.0.0.1:{daemon.listen_port}", CYGNET_CA=str(daemon.server_ca),
                  CYGNET_CERT=str(cert), CYGNET_KEY=str(key))
    status = cygnet(None, "host", "status", "--json", env=env).json()
    assert status["pools"][0]["name"] == daemon.pool.name
    cygnet(None, *remote(daemon), "db", "rm", name, "--yes")


def test_remote_refuses_an_untrusted_certificate(daemon: Daemon, tmp_path: Path) -> None:
    host = f"127.0.0.1:{daemon.listen_port}"
    if SYSTEM_CAS.exists():
        result = cygnet(None, *remote(daemon)[2:], "--host", host, "--ca", str(SYSTEM_CAS),
                        "db", "list", expect=UNREACHABLE)
        assert_one_error_line(result, host, "cannot trust cygnetd")
    result = cygnet(None, "--host", host, "--ca", str(tmp_path / "missing.pem"), "db", "list",
                    expect=INVALID)
    assert_one_error_line(result, "--ca", "missing.pem")


class LosesFirstReply(agent_pb2_grpc.AgentServicer):
    """Forwards CreateDatabase to the real daemon but loses its first reply.

    The one stand-in in these tests: a network that drops a response after the
    daemon acted cannot be provoked on demand on this machine.
    """

    def __init__(self, upstream: Any) -> None:
        self.upstream = upstream
        self.request_ids: list[str] = []

    def CreateDatabase(self, request: pb.CreateDatabaseRequest, context: Any
                       ) -> pb.CreateDatabaseResponse:
        self.request_ids.append(request.request_id)
        reply: pb.CreateDatabaseResponse = self.upstream.CreateDatabase(request, timeout=120)
        if len(self.request_ids) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset by peer")
        return reply


@pytest.fixture
def lossy(daemon: Daemon, tmp_path: Path) -> Iterator[tuple[Path, LosesFirstReply]]:
    with daemon.stub() as upstream:
        proxy = LosesFirstReply(upstream)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        agent_pb2_grpc.add_AgentServicer_to_server(proxy, server)  # type: ignore[no-untyped-call]
        sock = tmp_path / "lossy.sock"
        server.add_insecure_port(f"unix:{sock}")
        server.start()
        try:
            yield sock, proxy
        finally:
            server.stop(grace=None)


def test_retry_after_unavailable_reuses_the_request_id(
        daemon: Daemon, lossy: tuple[Path, LosesFirstReply]) -> None:
    sock, proxy = lossy
    name = unique("clid")
    created = cygnet(None, "--socket", str(sock), "db", "create", name, "--size", "nano",
                     "--json").json()
    first, second = proxy.request_ids
    assert first == second and len(first) == 36  # one uuid4, sent twice
    # The daemon acted once: the retry got the first result, not ALREADY_EXISTS.
    mine = [d for d in cygnet(daemon, "db", "list", "--json").json() if d["name"] == name]
    assert [d["id"] for d in mine] == [created["database"]["id"]]
    cygnet(daemon, "db", "rm", name, "--yes")


class Forwards(agent_pb2_grpc.AgentServicer):
    """Passes GetHostStatus on to the real daemon: a daemon that is back after a restart."""

    def __init__(self, upstream: Any) -> None:
        self.upstream = upstream

    def GetHostStatus(self, request: pb.GetHostStatusRequest, context: Any) -> pb.HostStatus:
        status: pb.HostStatus = self.upstream.GetHostStatus(request, timeout=30)
        return status


def test_a_daemon_back_within_seconds_is_waited_for(daemon: Daemon, tmp_path: Path) -> None:
    sock = tmp_path / "restarting.sock"
    # What a killed daemon leaves: a socket file nobody listens on (connect: refused).
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(sock))
    result = cygnet(None, "--socket", str(sock), "host", "status", expect=UNREACHABLE)
    assert_one_error_line(result, f"cygnetd not answering at unix:{sock}")
    assert "FAILED_PRECONDITION" not in result.err
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))

    def come_back() -> None:
        sock.unlink()
        server.add_insecure_port(f"unix:{sock}")
        server.start()

    with daemon.stub() as upstream:
        agent_pb2_grpc.add_AgentServicer_to_server(  # type: ignore[no-untyped-call]
            Forwards(upstream), server)
        timer = threading.Timer(2.0, come_back)  # a daemon restart takes seconds
        timer.start()
        try:
            status = cygnet(None, "--socket", str(sock), "host", "status", "--json").json()
        finally:
            timer.join()
            server.stop(grace=None)
    assert status["pools"][0]["name"] == daemon.pool.name
