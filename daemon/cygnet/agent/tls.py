"""TLS for the remote listener: certificates made at first start when none are configured.

A self-signed CA and a server certificate signed by it are written to
STATE_DIR/tls. Clients trust the CA file (`cygnet --ca STATE_DIR/tls/ca.pem`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

# The signing primitives are the fleet PKI's; VALIDITY and server_names are
# re-exported for the Postgres certificates (pgcert.py).
from cygnet.pki import VALIDITY, make_certificate, new_key, server_names, write_key

__all__ = ["VALIDITY", "TlsFiles", "ensure_certificates", "server_names"]


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None


def ensure_certificates(directory: Path, extra_names: list[str]) -> TlsFiles:
    """Creates CA and server certificate in `directory` unless they exist."""
    files = TlsFiles(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    if files.cert.exists() and files.key.exists():
        return files
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, server_key = new_key(), new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cygnet host CA")])
    ca = make_certificate("cygnet host CA", ca_key, ca_name, ca_key, True, [])
    server = make_certificate(socket.gethostname(), server_key, ca_name, ca_key, False,
                              server_names(extra_names))
    write_key(directory / "ca.key", ca_key)
    write_key(files.key, server_key)
    assert files.ca is not None
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    return files
