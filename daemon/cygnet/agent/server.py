"""The gRPC server: a root-only unix socket and a TLS TCP listener, health and reflection."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cygnet.agent.backups.service import BackupService
from cygnet.agent.backups.servicer import BackupsServicer
from cygnet.agent.config import AgentConfig
from cygnet.agent.servicer import AgentServicer
from cygnet.agent.tls import ensure_certificates
from cygnet.api.v1 import agent_pb2, agent_pb2_grpc, backup_pb2, backup_pb2_grpc
from cygnet.metrics.rpc import MetricsInterceptor
from cygnet.rpc.errors import ErrorInterceptor

log = logging.getLogger("cygnet.api")

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name
BACKUPS_NAME = backup_pb2.DESCRIPTOR.services_by_name["Backups"].full_name


def _tls_credentials(config: AgentConfig) -> grpc.ServerCredentials:
    if config.tls_cert and config.tls_key:
        cert, key = config.tls_cert, config.tls_key
    else:
        files = ensure_certificates(config.state_dir / "tls", [config.advertise_host])
        cert, key = files.cert, files.key
    pair = (key.read_bytes(), cert.read_bytes())
    if config.tls_client_ca:
        # In a fleet only holders of fleet certificates (the coordinator) get in.
        return grpc.ssl_server_credentials([pair], config.tls_client_ca.read_bytes(),
                                           require_client_auth=True)
    return grpc.ssl_server_credentials([pair])


def _prepare_socket(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.unlink(missing_ok=True)


def restrict_socket(path: Path) -> None:
    """The admin socket is for root alone: it can do anything to any database."""
    os.chmod(path, 0o600)


async def build_server(config: AgentConfig, servicer: AgentServicer
                       ) -> tuple[aio.Server, health.aio.HealthServicer]:
    # Metrics outermost: it counts the status code ErrorInterceptor's abort sets.
    server = aio.server(interceptors=[MetricsInterceptor("agent"), ErrorInterceptor()])
    agent_pb2_grpc.add_AgentServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    backup_pb2_grpc.add_BackupsServicer_to_server(  # type: ignore[no-untyped-call]
        BackupsServicer(BackupService(servicer.service)), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, BACKUPS_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    sock = config.admin_socket
    _prepare_socket(sock)
    server.add_insecure_port(f"unix:{sock}")
    if config.listen:
        port = server.add_secure_port(config.listen, _tls_credentials(config))
        log.info("TLS listener on %s (port %d)", config.listen, port)
    log.info("admin socket %s", sock)
    return server, health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    for name in ("", SERVICE_NAME, BACKUPS_NAME):
        await health_servicer.set(name, status)
