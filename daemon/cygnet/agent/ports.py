"""Ports for Postgres clusters, from the configured range.

A branch's port is stored in its `cygnet:port` property and kept for its whole
life (resets included), so its connection string never changes.
"""

from __future__ import annotations

import socket

from cygnet.errors import ResourceExhausted


def _bindable(port: int) -> bool:
    # Something outside Cygnet may hold the port; Postgres would then fail to start.
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((addr, port))
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno in (97, 99):  # no IPv6 here
                continue
            return False
    return True


class PortAllocator:
    """Hands out free ports. Reservations cover the gap until the dataset records the port."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self._reserved: set[int] = set()
        self._next = low

    def reserve(self, in_use: set[int]) -> int:
        span = self.high - self.low + 1
        for i in range(span):
            port = self.low + (self._next - self.low + i) % span
            if port in in_use or port in self._reserved or not _bindable(port):
                continue
            self._reserved.add(port)
            self._next = port + 1 if port < self.high else self.low
            return port
        raise ResourceExhausted(f"no free port left in {self.low}-{self.high}")

    def release(self, port: int) -> None:
        self._reserved.discard(port)
