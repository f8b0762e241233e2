"""The fleet's certificates: one CA, and a certificate for every host, coordinator and client.

`cygnet-coordinator pki init --dir DIR` makes DIR/ca.pem and DIR/ca.key;
`cygnet-coordinator pki issue --dir DIR --role host --name h1 --san 10.0.0.5`
makes DIR/h1.pem and DIR/h1.key signed by it. The common name is ROLE/NAME:
the coordinator lets a host certificate register only the host it names. The
same certificate serves as TLS server and client certificate (cygnetd's
listener and its calls to the coordinator). cygnetd signs its self-signed
certificates (agent/tls.py) with the primitives here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cygnet.errors import AlreadyExists, InvalidArgument, NotFound

ROLES = ("host", "coordinator", "client")
CA_NAME = "cygnet fleet CA"

VALIDITY = dt.timedelta(days=825)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                     signer: ec.EllipticCurvePrivateKey, is_ca: bool,
                     sans: list[x509.GeneralName]) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer, hashes.SHA256())


def server_names(extra: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for value in dict.fromkeys(["localhost", socket.gethostname(), "127.0.0.1", "::1", *extra]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            names.append(x509.DNSName(value))
    return names


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    ca: Path


def init_ca(directory: Path) -> Path:
    """Creates the fleet CA in `directory`; refuses to overwrite one."""
    ca_pem, ca_key = directory / "ca.pem", directory / "ca.key"
    if ca_pem.exists() or ca_key.exists():
        raise AlreadyExists(f"{directory} holds a CA already")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = new_key()
    # A name of its own: during a CA rollover, verifiers pick the issuer by name
    # from a bundle of old and new CA, so two CAs must never share one.
    subject = f"{CA_NAME} {os.urandom(4).hex()}"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    cert = make_certificate(subject, key, name, key, True, [])
    write_key(ca_key, key)
    ca_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca_pem


def issue(directory: Path, role: str, name: str, sans: list[str],
          out: Path | None = None) -> Issued:
    """Signs a ROLE/NAME certificate (with `sans` and localhost) by the CA in `directory`."""
    if role not in ROLES:
        raise InvalidArgument("role", f"{role!r} is not one of {', '.join(ROLES)}")
    if not name or "/" in name or name.startswith("."):
        raise InvalidArgument("name", f"{name!r} is not a plain name")
    try:
        ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    except FileNotFoundError as exc:
        raise NotFound(f"no CA in {directory}: run `pki init` first") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("dir", "the CA key is not an EC key")
    out = out or directory
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = new_key()
    cert = make_certificate(f"{role}/{name}", key, ca.subject, ca_key, False,
                     server_names([name, *sans]))
    files = Issued(out / f"{name}.pem", out / f"{name}.key", directory / "ca.pem")
    write_key(files.key, key)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def identity(common_name: str) -> tuple[str, str]:
    """("host", "h1") from "host/h1"; ("", "") if the name is not ROLE/NAME."""
    role, _, name = common_name.partition("/")
    return (role, name) if role in ROLES and name else ("", "")
