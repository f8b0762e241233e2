"""The /metrics endpoint: prometheus_client's threaded HTTP server on HOST:PORT."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from cygnet.errors import InvalidArgument

log = logging.getLogger("cygnet.metrics")


@dataclass
class Endpoint:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def parse_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9433', '[::1]:9433' or ':9433' (all addresses) -> (addr, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument("metrics_listen", f"{listen!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(listen: str, registry: CollectorRegistry) -> Endpoint | None:
    """Starts the endpoint; None when `listen` is empty (metrics disabled)."""
    if not listen:
        return None
    addr, port = parse_listen(listen)
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise InvalidArgument("metrics_listen", f"{listen}: {exc.strerror}") from exc
    endpoint = Endpoint(server, thread)
    log.info("metrics on http://%s:%d/metrics", addr, endpoint.port)
    return endpoint
