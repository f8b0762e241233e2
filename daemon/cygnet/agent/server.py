"""The gRPC server: a root-only unix socket and a mutual-TLS TCP listener, health and
reflection. Every call is authenticated, authorized by role and audited (rpc/auth.py)."""

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
from cygnet.agent.failures import Translator
from cygnet.agent.schema_service import SchemaService
from cygnet.agent.schema_servicer import SchemaServicer
from cygnet.agent.servicer import AgentServicer
from cygnet.agent.tls import ensure_certificates
from cygnet.api.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    backup_pb2,
    backup_pb2_grpc,
    schema_pb2,
    schema_pb2_grpc,
)
from cygnet.errors import InvalidArgument
from cygnet.metrics.rpc import MetricsInterceptor
from cygnet.rpc import health as health_status
from cygnet.rpc.audit import AuditLog
from cygnet.rpc.auth import AuthInterceptor, AuthPolicy
from cygnet.rpc.credentials import ReloadingCredentials
from cygnet.rpc.errors import ErrorInterceptor
from cygnet.rpc.revocation import DenyList
from cygnet.rpc.roles import Role, RoleMap

log = logging.getLogger("cygnet.api")

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name
BACKUPS_NAME = backup_pb2.DESCRIPTOR.services_by_name["Backups"].full_name
SCHEMA_NAME = schema_pb2.DESCRIPTOR.services_by_name["Schema"].full_name


def check_listener(config: AgentConfig) -> None:
    """Refuses a TCP listener that would serve callers without client certificates."""
    if not config.listen or config.tls_client_ca is not None:
        return
    if config.allow_tcp_without_client_certs:
        log.warning("listen = %s serves TLS clients WITHOUT certificates, each as admin: "
                    "anyone who reaches it can read every password and delete every "
                    "database (allow_tcp_without_client_certs; for labs only)", config.listen)
        return
    raise InvalidArgument("tls_client_ca", f"listen = {config.listen} needs tls_client_ca: "
                          "the fleet CA that signs client certificates (docs/operations.md). "
                          "Set listen = \"\" to serve the unix socket only")


def _tls_credentials(config: AgentConfig) -> grpc.ServerCredentials:
    if config.tls_cert and config.tls_key:
        cert, key = config.tls_cert, config.tls_key
    else:
        files = ensure_certificates(config.state_dir / "tls", [config.advertise_host])
        cert, key = files.cert, files.key
    # Reloaded from their files on change: renewals and a new client CA need no restart.
    return ReloadingCredentials(cert, key, config.tls_client_ca).server_credentials()


def auth_policy(config: AgentConfig) -> AuthPolicy:
    anonymous = Role.ADMIN if config.allow_tcp_without_client_certs else None
    return AuthPolicy(RoleMap.from_setting(config.roles), DenyList(config.revoked),
                      AuditLog(config.audit_log), anonymous_role=anonymous)


def _prepare_socket(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.unlink(missing_ok=True)


def restrict_socket(path: Path) -> None:
    """The admin socket is for root alone: it can do anything to any database."""
    os.chmod(path, 0o600)


async def build_server(config: AgentConfig, servicer: AgentServicer
                       ) -> tuple[aio.Server, health.aio.HealthServicer]:
    # Metrics outermost: it counts the status code ErrorInterceptor's abort sets.
    # Then authentication and authorization: a refused request never reaches a servicer.
    # (main.py has called check_listener before any work.)
    server = aio.server(interceptors=[MetricsInterceptor("agent"),
                                      AuthInterceptor(auth_policy(config)),
                                      ErrorInterceptor(translate=Translator(servicer.service.host))],
                        # Pings on long streams (MoveIn): a caller whose machine
                        # vanished, with no FIN or RST, has its call cancelled here
                        # within 20 s, not at a TCP timeout minutes later.
                        options=[("grpc.keepalive_time_ms", 10_000),
                                 ("grpc.keepalive_timeout_ms", 10_000)])
    agent_pb2_grpc.add_AgentServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    backup_pb2_grpc.add_BackupsServicer_to_server(  # type: ignore[no-untyped-call]
        BackupsServicer(BackupService(servicer.service)), server)
    schema_pb2_grpc.add_SchemaServicer_to_server(  # type: ignore[no-untyped-call]
        SchemaServicer(SchemaService(servicer.service)), server)
    health_servicer = await health_status.starting_servicer(
        (SERVICE_NAME, BACKUPS_NAME, SCHEMA_NAME))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, BACKUPS_NAME, SCHEMA_NAME,
         health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME], server)
    sock = config.admin_socket
    _prepare_socket(sock)
    server.add_insecure_port(f"unix:{sock}")
    if config.listen:
        port = server.add_secure_port(config.listen, _tls_credentials(config))
        log.info("TLS listener on %s (port %d), client certificates signed by %s", config.listen,
                 port, config.tls_client_ca or "anyone (lab mode)")
    log.info("admin socket %s", sock)
    return server, health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    await health_status.set_serving(health_servicer, (SERVICE_NAME, BACKUPS_NAME, SCHEMA_NAME),
                                    serving)
