"""Where the daemon is: the local unix socket, or a remote TLS listener."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from cygnet.cli.errors import CliError, Exit

DEFAULT_SOCKET = Path("/run/cygnet/cygnetd.sock")
DEFAULT_CA = Path("/var/lib/cygnet/tls/ca.pem")
DEFAULT_PORT = 7433


@dataclass(frozen=True)
class Target:
    socket: Path
    host: str | None = None
    ca: Path | None = None
    server_name: str | None = None

    @property
    def address(self) -> str:
        """How the target is named in messages and given to gRPC."""
        if self.host:
            return with_port(self.host)
        return f"unix:{self.socket.absolute()}"

    def channel(self) -> grpc.Channel:
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

    def _tls_channel(self) -> grpc.Channel:
        ca = self.ca if self.ca is not None else (DEFAULT_CA if DEFAULT_CA.exists() else None)
        root: bytes | None = None
        if ca is not None:
            try:
                root = ca.read_bytes()
            except OSError as exc:
                raise CliError(f"--ca: cannot read {ca}: {exc.strerror}", Exit.INVALID) from exc
        options = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        creds = grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.secure_channel(self.address, creds, options=options)


def with_port(host: str) -> str:
    """`HOST` -> `HOST:7433`; `HOST:PORT` and `[v6]:PORT` are kept."""
    if host.startswith("["):
        return host if "]:" in host else f"{host}:{DEFAULT_PORT}"
    if host.count(":") == 1:
        return host
    if ":" in host:  # a bare IPv6 address
        return f"[{host}]:{DEFAULT_PORT}"
    return f"{host}:{DEFAULT_PORT}"
