"""Ports for Postgres clusters, from the configured range.

A branch's port is stored in its `cygnet:port` property and kept while the
branch runs or is stopped (resets included). A suspended branch holds none: its
port goes back to the range, and a resume may get another (agent/scale.py);
the stable address is the host's endpoint.
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
    """Hands out free ports and remembers which ones branches hold.

    `sync` takes the truth from a full inventory (at start and periodically);
    in between, `reserve` and `release` keep the set current, so no operation
    needs to list every branch on the host to pick a port.
    """

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self._taken: set[int] = set()
        self._in_flight: set[int] = set()
        self._next = low

    def sync(self, in_use: set[int]) -> None:
        self._taken = set(in_use)

    def reserve(self) -> int:
        """A port no branch holds and nothing else has bound; held until released."""
        span = self.high - self.low + 1
        for i in range(span):
            port = self.low + (self._next - self.low + i) % span
            if port in self._taken or port in self._in_flight or not _bindable(port):
                continue
            self._in_flight.add(port)
            self._next = port + 1 if port < self.high else self.low
            return port
        raise ResourceExhausted(f"no free port left in {self.low}-{self.high}")

    def commit(self, port: int) -> None:
        """The port now belongs to a branch recorded in ZFS."""
        self._in_flight.discard(port)
        self._taken.add(port)

    def release(self, port: int) -> None:
        """The reservation failed, or the branch holding the port is gone."""
        self._in_flight.discard(port)
        self._taken.discard(port)
