"""TLS server credentials that follow their files: a renewed certificate or a new
client CA takes effect on the next handshake, without a restart.

gRPC asks the fetcher before every handshake; it compares the files' mtimes
and hands over a new configuration only when one changed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc

from cygnet.errors import InvalidArgument

log = logging.getLogger("cygnet.auth")


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(field, f"{path}: {exc.strerror}") from exc


class ReloadingCredentials:
    """cert/key (and the client CA, when clients must present certificates)."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.files = {"tls_cert": cert, "tls_key": key}
        if client_ca is not None:
            self.files["tls_client_ca"] = client_ca
        self.require_client_auth = client_ca is not None
        self._stamp = self._stamps()
        self.initial = self._configuration()

    def _stamps(self) -> tuple[int, ...]:
        try:
            return tuple(os.stat(p).st_mtime_ns for p in self.files.values())
        except OSError:
            return ()

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        data = {name: _read(path, name) for name, path in self.files.items()}
        return grpc.ssl_server_certificate_configuration(
            [(data["tls_key"], data["tls_cert"])], data.get("tls_client_ca"))

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's callback: a new configuration, or None to keep the current one."""
        stamp = self._stamps()
        if not stamp or stamp == self._stamp:
            return None
        try:
            config = self._configuration()
        except InvalidArgument as exc:
            log.error("TLS files not reloaded, keeping the previous ones: %s", exc)
            return None
        self._stamp = stamp
        log.warning("TLS certificate files changed: reloaded %s",
                    ", ".join(str(p) for p in self.files.values()))
        return config

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial, self.fetch, require_client_authentication=self.require_client_auth)
