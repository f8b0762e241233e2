"""Where the daemon is: the local unix socket, or a remote mutual-TLS listener.

A remote daemon wants a client certificate from the fleet PKI (--cert/--key,
CYGNET_CERT/CYGNET_KEY). When it refuses one, gRPC only reports UNAVAILABLE;
`refusal()` then redoes the handshake with Python's ssl module, which sees the
TLS alert the daemon sent, so the user learns what is wrong with the certificate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cygnet.cli.errors import CliError, Exit

if TYPE_CHECKING:  # grpc is loaded only by commands that call the daemon
    import grpc

DEFAULT_SOCKET = Path("/run/cygnet/cygnetd.sock")
DEFAULT_CA = Path("/var/lib/cygnet/tls/ca.pem")
DEFAULT_PORT = 7433
REFUSED = "the daemon refused this client's certificate"


@dataclass(frozen=True)
class Target:
    socket: Path
    host: str | None = None
    ca: Path | None = None
    server_name: str | None = None
    cert: Path | None = None
    key: Path | None = None

    @property
    def address(self) -> str:
        """How the target is named in messages and given to gRPC."""
        if self.host:
            return with_port(self.host)
        return f"unix:{self.socket.absolute()}"

    def channel(self) -> grpc.Channel:
        import grpc

        if self.host:
            return self._tls_channel()
        self._check_socket()
        return grpc.insecure_channel(self.address)

    def _check_socket(self) -> None:
        # gRPC would retry a missing socket until the deadline; say so at once instead.
        if not self.socket.exists():
            raise CliError(f"cannot reach cygnetd at {self.address}: no such socket "
                           "(is cygnetd running? see --socket or --host)", Exit.UNREACHABLE)
        if not os.access(self.socket, os.R_OK | os.W_OK):
            raise CliError(f"cannot reach cygnetd at {self.address}: permission denied "
                           "(the admin socket is for root)", Exit.UNREACHABLE)

    @property
    def trusted_ca(self) -> Path | None:
        return self.ca if self.ca is not None else (DEFAULT_CA if DEFAULT_CA.exists() else None)

    def _tls_channel(self) -> grpc.Channel:
        import grpc

        ca = self.trusted_ca
        root = _read(ca, "--ca") if ca is not None else None
        if (self.cert is None) != (self.key is None):
            raise CliError("--cert and --key go together (or CYGNET_CERT and CYGNET_KEY)",
                           Exit.INVALID)
        cert = _read(self.cert, "--cert") if self.cert else None
        key = _read(self.key, "--key") if self.key else None
        options = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                             certificate_chain=cert)
        return grpc.secure_channel(self.address, creds, options=options)

    def refusal(self) -> CliError | None:
        """Why the TLS listener refuses this client, or None if it does not (or cannot
        be reached at all, which is a transport failure to retry)."""
        import socket
        import ssl

        if not self.host:
            return None
        host, _, port = self.address.rpartition(":")
        host = host.strip("[]")
        context = ssl.create_default_context(
            cafile=str(self.trusted_ca) if self.trusted_ca else None)
        context.set_alpn_protocols(["h2"])
        try:
            if self.cert and self.key:
                context.load_cert_chain(self.cert, self.key)
            with socket.create_connection((host, int(port)), timeout=3) as raw, \
                    context.wrap_socket(raw, server_hostname=self.server_name or host) as tls:
                # TLS 1.3: the server judges the client's certificate after the
                # handshake. It then speaks first (HTTP/2 settings), or hangs up.
                tls.settimeout(3)
                if tls.recv(1):
                    return None
        except ssl.SSLCertVerificationError as exc:
            return CliError(f"cannot trust cygnetd at {self.address}: {exc.verify_message} "
                            "(see --ca)", Exit.UNREACHABLE)
        except ssl.SSLError as exc:
            return CliError(f"{REFUSED}: {exc.reason or exc}", Exit.DENIED)
        except (OSError, ValueError):
            return None
        return CliError(f"{REFUSED}: {self._why_refused()}", Exit.DENIED)

    def _why_refused(self) -> str:
        """The daemon sends no reason (its log has it): say what can be seen from here."""
        if self.cert is None:
            return ("no client certificate was sent (give --cert and --key, or CYGNET_CERT "
                    "and CYGNET_KEY; `cygnet-coordinator pki issue --role client` makes one)")
        import datetime as dt

        from cryptography import x509

        try:
            cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        except ValueError:
            return f"{self.cert} is not a PEM certificate"
        now = dt.datetime.now(dt.UTC)
        if cert.not_valid_after_utc < now:
            return f"{self.cert} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        if cert.not_valid_before_utc > now:
            return f"{self.cert} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}"
        return (f"{self.cert} ({cert.subject.rfc4514_string()}) is not signed by a CA the "
                "daemon trusts (its tls_client_ca); the daemon's log says why")


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"{option}: cannot read {path}: {exc.strerror}", Exit.INVALID) from exc


def with_port(host: str) -> str:
    """`HOST` -> `HOST:7433`; `HOST:PORT` and `[v6]:PORT` are kept."""
    if host.startswith("["):
        return host if "]:" in host else f"{host}:{DEFAULT_PORT}"
    if host.count(":") == 1:
        return host
    if ":" in host:  # a bare IPv6 address
        return f"[{host}]:{DEFAULT_PORT}"
    return f"{host}:{DEFAULT_PORT}"
