"""The daemon's surface: listeners, TLS, health, reflection, and a full pool."""

from __future__ import annotations

import stat
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cygnet.agent.reserved_ports import PROC_NET, covered, parse_spans
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.harness import Daemon, fleet_pki, private_daemon, run

pytestmark = pytest.mark.integration


def test_admin_socket_is_root_only(daemon: Daemon) -> None:
    mode = daemon.socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_the_postgres_ports_are_kept_from_outgoing_connections() -> None:
    """A daemon whose range lies inside the kernel's ephemeral ports reserves it at
    start, so no outgoing connection takes a stopped branch's port
    (agent/reserved_ports.py). The machine's setting is put back afterwards."""
    proc = PROC_NET
    first, last = (int(x) for x in (proc / "ip_local_port_range").read_text().split())
    before = (proc / "ip_local_reserved_ports").read_text()
    port_min = next(p for p in range(max(first, 40000), last - 200, 200)
                    if not covered(parse_spans(before), (p, p + 199)))
    try:
        with private_daemon("rp", port_min, "1G", unix_only=True) as d:
            reserved = parse_spans((proc / "ip_local_reserved_ports").read_text())
            assert covered(reserved, (port_min, port_min + 199)), reserved
            assert f"reserved ports {port_min}-{port_min + 199}" in d.log_path.read_text()
    finally:
        (proc / "ip_local_reserved_ports").write_text(before)


def test_tls_listener_with_generated_certificates(daemon: Daemon) -> None:
    ca = (daemon.base / "state" / "tls" / "ca.pem").read_bytes()
    creds = grpc.ssl_channel_credentials(ca, *fleet_pki().key_and_chain("reader"))
    with grpc.secure_channel(f"localhost:{daemon.listen_port}", creds) as ch:
        status = pb_grpc.AgentStub(ch).GetHostStatus(  # type: ignore[no-untyped-call]
            pb.GetHostStatusRequest(), timeout=10)
    assert status.pools[0].name == daemon.pool.name
    # Plain text on the TLS port is refused.
    with grpc.insecure_channel(f"localhost:{daemon.listen_port}") as ch, \
            pytest.raises(grpc.RpcError):
        pb_grpc.AgentStub(ch).GetHostStatus(  # type: ignore[no-untyped-call]
            pb.GetHostStatusRequest(), timeout=5)


def test_health_and_reflection(daemon: Daemon) -> None:
    with daemon.channel() as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "cygnet.v1.Agent"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        (resp,) = list(refl.ServerReflectionInfo(iter([req]), timeout=5))
    names = {s.name for s in resp.list_services_response.service}
    assert {"cygnet.v1.Agent", "grpc.health.v1.Health"} <= names


def test_full_pool_is_resource_exhausted_and_leaves_nothing() -> None:
    with private_daemon("f", 55250, "300M") as d, d.stub() as s:
        s.CreateDatabase(pb.CreateDatabaseRequest(name="first", size_class="nano"), timeout=120)
        filler = d.mount_root / d.pool.name / "filler"
        run("dd", "if=/dev/urandom", f"of={filler}", "bs=1M", "count=400", check=False)
        before = d.pool.datasets()
        calls: tuple[Callable[[], object], ...] = (
            lambda: s.CreateDatabase(pb.CreateDatabaseRequest(name="second"), timeout=60),
            lambda: s.CreateBranch(pb.CreateBranchRequest(database="first", name="b"),
                                   timeout=60),
        )
        for call in calls:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "full" in err.value.details()
        assert d.pool.datasets() == before
