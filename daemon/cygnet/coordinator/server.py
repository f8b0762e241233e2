"""The coordinator's gRPC server: mutual-TLS and token listeners, health and reflection."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cygnet.api.v1 import coordinator_pb2, coordinator_pb2_grpc
from cygnet.coordinator.config import CoordinatorConfig
from cygnet.coordinator.servicer import CoordinatorServicer
from cygnet.errors import InvalidArgument
from cygnet.metrics.rpc import MetricsInterceptor
from cygnet.rpc import health as health_status
from cygnet.rpc.audit import AuditLog
from cygnet.rpc.auth import AuthInterceptor, AuthPolicy
from cygnet.rpc.credentials import ReloadingCredentials
from cygnet.rpc.errors import ErrorInterceptor
from cygnet.rpc.revocation import DenyList
from cygnet.rpc.roles import RoleMap

log = logging.getLogger("cygnet.coordinator")

SERVICE_NAME = coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name


def _read(path: object, field: str) -> bytes:
    try:
        return Path(str(path)).read_bytes()
    except OSError as exc:
        raise InvalidArgument(field, f"{path}: {exc.strerror}") from exc


def credentials(config: CoordinatorConfig, require_client_cert: bool) -> grpc.ServerCredentials:
    """Reloaded from their files on change: renewals and a new CA need no restart."""
    for field in ("tls_cert", "tls_key", "tls_ca"):
        _read(getattr(config, field), field)  # a missing file is a clear error at start
    return ReloadingCredentials(config.tls_cert, config.tls_key,
                                config.tls_ca if require_client_cert else None
                                ).server_credentials()


def auth_policy(config: CoordinatorConfig, tokens: dict[str, tuple[str, str]]) -> AuthPolicy:
    return AuthPolicy(RoleMap.from_setting(config.roles), DenyList(config.revoked),
                      AuditLog(config.audit_log), tokens=tokens)


async def build_server(config: CoordinatorConfig, servicer: CoordinatorServicer,
                       tokens: dict[str, tuple[str, str]]
                       ) -> tuple[aio.Server, health.aio.HealthServicer, dict[str, int]]:
    # Authentication first: an unauthenticated request is not even decoded.
    # Metrics outside both, so refused and failed calls are counted by code.
    server = aio.server(interceptors=[MetricsInterceptor("coordinator"),
                                      AuthInterceptor(auth_policy(config, tokens)),
                                      ErrorInterceptor()],
                        # Thousands of heartbeat streams of one small message per
                        # interval: bandwidth probes (pings) cost more than they tune.
                        options=[("grpc.http2.bdp_probe", 0)])
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = await health_status.starting_servicer((SERVICE_NAME,))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    ports: dict[str, int] = {}
    # Several addresses are comma-separated (e.g. a unix socket for local tools).
    for address in filter(None, config.listen.split(",")):
        ports[address] = server.add_secure_port(address, credentials(config, True))
        log.info("mutual TLS listener on %s (port %d)", address, ports[address])
    if config.listen_token:
        ports["listen_token"] = server.add_secure_port(config.listen_token,
                                                       credentials(config, False))
        log.info("token listener on %s (port %d)", config.listen_token, ports["listen_token"])
    return server, health_servicer, ports


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    await health_status.set_serving(health_servicer, (SERVICE_NAME,), serving)
