"""The certificate every branch's Postgres serves: the host's, kept outside pgdata.

A fleet host serves its fleet host certificate (tls_cert/tls_key); a
standalone host serves the certificate its own host CA signed (agent/tls.py).
Either way cygnetd copies the pair into STATE_DIR/postgres-tls, where Postgres
(running as postgres) can read it: the key 0600 and owned by postgres, as
Postgres demands. The CA that signed it sits beside it as ca.pem, readable by
anyone, for clients' sslrootcert. Nothing of it is in pgdata, so clones,
snapshots and backups never carry the host's private key.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from cygnet.agent.config import AgentConfig
from cygnet.agent.tls import ensure_certificates
from cygnet.errors import InvalidArgument
from cygnet.postgres.config import ServerTls
from cygnet.postgres.layout import postgres_user

log = logging.getLogger("cygnet.agent")

DIRECTORY = "postgres-tls"


@dataclass(frozen=True)
class Source:
    """Where the host's certificate comes from, and which setting names each file."""

    cert: Path
    key: Path
    ca: Path | None
    cert_field: str
    key_field: str
    ca_field: str


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
    return list(dict.fromkeys([config.advertise_host, "127.0.0.1", "localhost",
                               *(a for a in listen if a and a != "*")]))


def _source(config: AgentConfig) -> Source:
    if config.tls_cert and config.tls_key:
        if config.coordinator_ca:
            return Source(config.tls_cert, config.tls_key, config.coordinator_ca,
                          "tls_cert", "tls_key", "coordinator_ca")
        return Source(config.tls_cert, config.tls_key, config.tls_client_ca,
                      "tls_cert", "tls_key", "tls_client_ca")
    files = ensure_certificates(config.state_dir / "tls", server_names(config))
    return Source(files.cert, files.key, files.ca, "state_dir", "state_dir", "state_dir")


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(field, f"cannot read {path}: {exc.strerror}") from None


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


def _warn_uncovered(cert_pem: bytes, names: list[str]) -> None:
    """verify-full fails for a name the certificate lacks: say so at start, not per client."""
    cert = x509.load_pem_x509_certificate(cert_pem)
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
    """Copies the host's certificate, key and CA into STATE_DIR/postgres-tls; returns the paths.

    Idempotent, and refreshes the copies when the host's certificate changed
    (a running Postgres rereads them on reload or restart).
    """
    source = _source(config)
    cert, key = _read(source.cert, source.cert_field), _read(source.key, source.key_field)
    ca = _read(source.ca, source.ca_field) if source.ca else None
    directory = config.state_dir / DIRECTORY
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    os.chmod(directory, 0o755)
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
    _warn_uncovered(cert, server_names(config))
    return files
