"""The certificate every branch's Postgres serves, kept outside pgdata.

Where it comes from, first match wins:
- postgres_tls_cert/postgres_tls_key: a fleet certificate for this host's Postgres;
- tls_cert/tls_key: the fleet host certificate itself (a warning: every
  branch's superuser can read what Postgres can, and this key is also the
  host's identity in the fleet);
- a standalone host: a certificate of Postgres' own, signed by the host CA
  (agent/pgcert.py).
cygnetd puts the pair in STATE_DIR/postgres-tls, the key 0600 and owned by
postgres, as Postgres demands. The CA sits beside it as ca.pem, readable by
anyone, for clients' sslrootcert. Nothing of it is in pgdata, so clones,
snapshots and backups never carry the key.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from cygnet.agent import pgcert
from cygnet.agent.config import AgentConfig
from cygnet.agent.tls import ensure_certificates
from cygnet.errors import InvalidArgument
from cygnet.postgres.config import ServerTls
from cygnet.postgres.layout import postgres_user

log = logging.getLogger("cygnet.agent")

DIRECTORY = "postgres-tls"


@dataclass(frozen=True)
class Material:
    """The bytes to install: certificate, key and (when known) the CA."""

    cert: bytes
    key: bytes
    ca: bytes | None
    cert_field: str = "state_dir"


def listen_addresses(config: AgentConfig) -> str:
    """postgres_listen, or when empty the advertise host's addresses.

    Connection strings name advertise_host, so that is where Postgres must
    listen; nothing else is exposed unless an operator asks for it.
    """
    if config.postgres_listen.strip():
        return config.postgres_listen
    host = config.advertise_host
    if host == "localhost" or _is_ip(host):
        return host
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise InvalidArgument("postgres_listen", f"is empty and advertise_host {host!r} does "
                              f"not resolve ({exc.strerror}); set postgres_listen") from None
    return ",".join(dict.fromkeys(str(info[4][0]) for info in infos))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _normal(name: str) -> str:
    return str(ipaddress.ip_address(name)) if _is_ip(name) else name.lower()


def server_names(config: AgentConfig) -> list[str]:
    """Names the certificate must carry: what connection strings and local clients use."""
    listen = [a.strip() for a in config.postgres_listen.split(",")]
    # Endpoint names (docs/endpoints.md): one wildcard covers every DB--BRANCH.DOMAIN.
    endpoints = [f"*.{config.endpoint_domain.strip('.')}"] if config.endpoint_domain else []
    return list(dict.fromkeys([config.advertise_host, "127.0.0.1", "localhost",
                               *(a for a in listen if a and a != "*"), *endpoints]))


def _read(path: Path | str, field: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(field, f"cannot read {path}: {exc.strerror}") from None


def _fleet_ca(config: AgentConfig) -> bytes | None:
    if config.coordinator_ca:
        return _read(config.coordinator_ca, "coordinator_ca")
    if config.tls_client_ca:
        return _read(config.tls_client_ca, "tls_client_ca")
    return None


def _material(config: AgentConfig, directory: Path) -> Material:
    if config.postgres_tls_cert or config.postgres_tls_key:
        if not (config.postgres_tls_cert and config.postgres_tls_key):
            raise InvalidArgument("postgres_tls_cert", "needs postgres_tls_key too")
        return Material(_read(config.postgres_tls_cert, "postgres_tls_cert"),
                        _read(config.postgres_tls_key, "postgres_tls_key"), _fleet_ca(config),
                        "postgres_tls_cert")
    if config.tls_cert and config.tls_key:
        log.warning("Postgres serves the fleet host certificate (tls_key): every branch's "
                    "superuser can read its key. Set postgres_tls_cert/postgres_tls_key "
                    "(docs/operations.md)")
        return Material(_read(config.tls_cert, "tls_cert"), _read(config.tls_key, "tls_key"),
                        _fleet_ca(config), "tls_cert")
    host = ensure_certificates(config.state_dir / "tls", server_names(config))
    assert host.ca is not None
    current = _installed(directory)
    # tls.py keeps the host CA's key beside its certificate.
    issued = pgcert.issue(host.ca, host.ca.with_name("ca.key"), server_names(config), current)
    pair = issued or current
    assert pair is not None
    return Material(pair.cert_pem, pair.key_pem, host.ca.read_bytes())


def _installed(directory: Path) -> pgcert.Issued | None:
    try:
        return pgcert.Issued((directory / "server.crt").read_bytes(),
                             (directory / "server.key").read_bytes())
    except FileNotFoundError:
        return None


def _install(path: Path, data: bytes, mode: int, owner: tuple[int, int]) -> None:
    """Replaces `path` atomically, unless it already holds `data` with that mode and owner."""
    try:
        st = path.stat()
        if (st.st_mode & 0o777, st.st_uid, st.st_gid) == (mode, *owner) \
                and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _warn_uncovered(cert_pem: bytes, names: list[str], field: str) -> None:
    """verify-full fails for a name the certificate lacks: say so at start, not per client."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise InvalidArgument(field, "is not a PEM certificate") from None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    have = {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    have |= {v.lower() for v in sans.get_values_for_type(x509.DNSName)}
    missing = [n for n in names if _normal(n) not in have]
    if missing:
        log.warning("the Postgres server certificate does not name %s: clients using "
                    "sslmode=verify-full with those names will be refused", ", ".join(missing))


def ensure_postgres_tls(config: AgentConfig) -> ServerTls:
    """Installs Postgres' certificate, key and CA in STATE_DIR/postgres-tls; returns the paths.

    Idempotent, and refreshes the copies when the host's certificate changed
    (a running Postgres rereads them on reload or restart).
    """
    directory = config.state_dir / DIRECTORY
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    os.chmod(directory, 0o755)
    material = _material(config, directory)
    cert, key, ca = material.cert, material.key, material.ca
    _warn_uncovered(cert, server_names(config), material.cert_field)
    user = postgres_user()
    root = (0, 0)
    files = ServerTls(directory / "server.crt", directory / "server.key",
                      directory / "ca.pem" if ca is not None else None)
    _install(files.cert, cert, 0o644, root)
    _install(files.key, key, 0o600, (user.uid, user.gid))
    if files.ca is not None and ca is not None:
        _install(files.ca, ca, 0o644, root)
    else:
        (directory / "ca.pem").unlink(missing_ok=True)
    return files
