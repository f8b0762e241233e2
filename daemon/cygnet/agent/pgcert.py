"""A certificate of its own for Postgres on a standalone host, signed by the host CA.

Every branch's superuser can read what the postgres user can
(pg_read_file), so Postgres gets a key pair of its own, never the key of the
daemon's API listener. The host CA (agent/tls.py, STATE_DIR/tls) signs it, so
clients trust the same ca.pem for both.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cygnet.errors import InvalidArgument
from cygnet.pki import make_certificate, new_key, server_names

# Reissued when less than this is left, so a long-running host never serves an expired one.
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _load_ca(ca_pem: Path, ca_key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        key = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise InvalidArgument("state_dir", f"cannot load the host CA from {ca_pem.parent}: "
                              f"{exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("state_dir", f"{ca_key} is not an EC key")
    return ca, key


def still_good(current: Issued, ca: x509.Certificate, names: list[str]) -> bool:
    """Signed by `ca`, naming every one of `names`, not close to expiry, and the key matches."""
    try:
        cert = x509.load_pem_x509_certificate(current.cert_pem)
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        key = serialization.load_pem_private_key(current.key_pem, None)
    except (ValueError, TypeError, UnsupportedAlgorithm, InvalidSignature,
            x509.ExtensionNotFound):
        return False
    if key.public_key() != cert.public_key():  # e.g. a crash between writing the two
        return False
    wanted = set(server_names(names))
    if not wanted <= set(sans):
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE


def issue(ca_pem: Path, ca_key: Path, names: list[str], current: Issued | None
          ) -> Issued | None:
    """A new certificate and key for `names`, or None when `current` still serves."""
    ca, signer = _load_ca(ca_pem, ca_key)
    if current is not None and still_good(current, ca, names):
        return None
    key = new_key()
    cert = make_certificate(f"postgres@{socket.gethostname()}", key, ca.subject, signer,
                            False, server_names(names))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem)
