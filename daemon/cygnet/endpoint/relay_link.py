"""cygnetd's side of the relay: where routed connections go to have their bytes moved.

Two kinds (setting `endpoint_relay`):
- "process" (the default): the relay process (relayd.py), started by the first
  cygnetd that needs it and left running across cygnetd restarts, so relayed
  connections survive them. Each connection's two sockets are sent to it, or,
  for `options=endpoint=`, the client's socket alone (route_link.py).
- "thread": the C relay thread inside cygnetd; a restart cuts its connections.
"""

from __future__ import annotations

import array
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from cygnet import _native
from cygnet.endpoint.relayd import (
    COUNT,
    FDS_SIZE,
    OP_ADD,
    OP_GIVE,
    OP_KEEP,
    OP_OPTIONS,
    OP_STATS,
    STATS,
    dial,
    peer_ids,
    received_fds,
)
from cygnet.endpoint.route_link import OP_TERMINATE

log = logging.getLogger("cygnet.endpoint")

START_TIMEOUT = 10.0


class Relay(Protocol):
    def add(self, client: socket.socket, server: socket.socket) -> None:
        """Hands both sockets over; the caller's objects are closed or detached after."""

    def stats(self) -> tuple[int, int, int, int]:
        """(active, total, bytes client->branch, bytes branch->client)."""

    def keep_listeners(self, listeners: list[socket.socket]) -> None:
        """cygnetd stops: the relay holds the listening sockets until the next one."""

    def take_listeners(self) -> list[socket.socket]:
        """cygnetd starts: the listening sockets the last one left, if any."""

    def close(self) -> None: ...


class ThreadRelay:
    def add(self, client: socket.socket, server: socket.socket) -> None:
        _native.relay_add(client.fileno(), server.fileno())
        client.detach()
        server.detach()

    def stats(self) -> tuple[int, int, int, int]:
        active, total, up, down = _native.relay_stats()
        return int(active), int(total), int(up), int(down)

    def keep_listeners(self, listeners: list[socket.socket]) -> None:
        pass  # nothing outlives cygnetd here

    def take_listeners(self) -> list[socket.socket]:
        return []

    def close(self) -> None:
        pass


class ProcessRelay:
    """The control socket to the relay process; (re)starts the process when none answers."""

    def __init__(self, path: Path, linger: float) -> None:
        self.path, self.linger = path, linger
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # adds from the event loop, stats from scrapes

    def start(self) -> None:
        with self._lock:
            self._connected()

    def _connected(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = dial(self.path)
        if sock is None:
            self._spawn()
            deadline = time.monotonic() + START_TIMEOUT
            while sock is None and time.monotonic() < deadline:
                time.sleep(0.02)
                sock = dial(self.path)
            if sock is None:
                raise OSError(f"the endpoint relay did not start on {self.path}")
        else:
            log.info("endpoint: the relay on %s was running already", self.path)
        self._sock = sock
        return sock

    def _spawn(self) -> None:
        # Its own session: neither cygnetd's exit nor a signal to cygnetd's group
        # reaches it. Its messages go where cygnetd's do.
        subprocess.Popen([sys.executable, "-m", "cygnet.endpoint.relayd", "--socket",
                          str(self.path), "--linger", f"{self.linger:g}"],
                         stdin=subprocess.DEVNULL, cwd="/", start_new_session=True,
                         close_fds=True)
        log.info("endpoint: started the relay process on %s", self.path)

    def _send(self, data: bytes, fds: list[int]) -> socket.socket:
        """Sends one message, reconnecting (and restarting the relay) once if it went."""
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] \
            if fds else []
        for attempt in (1, 2):
            sock = self._connected()
            try:
                sock.sendmsg([data], anc)
                return sock
            except OSError:
                sock.close()
                self._sock = None
                if attempt == 2:
                    raise
                log.warning("endpoint: the relay process went away; starting it again")
        raise AssertionError("unreachable")

    def add(self, client: socket.socket, server: socket.socket) -> None:
        with self._lock:
            self._send(OP_ADD, [client.fileno(), server.fileno()])
        client.close()  # the relay holds its own copies now
        server.close()

    def hand_over_tls(self, client: socket.socket) -> None:
        """A client to route by `options=endpoint=`: the relay terminates its TLS and
        asks cygnetd's route link (route_link.py) where it goes."""
        with self._lock:
            self._send(OP_TERMINATE, [client.fileno()])
        client.close()

    def options_relaying(self) -> int:
        """options= sessions the relay process relays now (only a relay that answered
        the route link's hello knows this message)."""
        answer = self._ask(OP_OPTIONS, COUNT)
        return int(answer[0]) if answer else 0

    def stats(self) -> tuple[int, int, int, int]:
        answer = self._ask(OP_STATS, STATS)
        if answer is None:
            return 0, 0, 0, 0
        active, total, up, down = answer
        return active, total, up, down

    def _ask(self, op: bytes, reply: struct.Struct) -> tuple[Any, ...] | None:
        """One question and its fixed-size answer; None (and a new connection next
        time) when the relay does not answer it."""
        with self._lock:
            sock = self._send(op, [])
            try:
                data = sock.recv(reply.size)
            except OSError:
                data = b""
            if len(data) != reply.size:
                sock.close()
                self._sock = None
                return None
        return reply.unpack(data)

    def keep_listeners(self, listeners: list[socket.socket]) -> None:
        with self._lock:
            self._send(OP_KEEP, [s.fileno() for s in listeners])

    def take_listeners(self) -> list[socket.socket]:
        with self._lock:
            sock = self._send(OP_GIVE, [])
            try:
                data, ancdata, _, _ = sock.recvmsg(16, FDS_SIZE)
            except OSError:
                return []
        fds = received_fds(ancdata)
        if data != OP_GIVE:
            for fd in fds:
                socket.close(fd)
            return []
        return [socket.socket(fileno=fd) for fd in fds]

    def close(self) -> None:
        """cygnetd stops: the relay goes on with what it relays (and lingers)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def open_relay(kind: str, run_dir: Path, linger: float) -> Relay:
    if kind == "thread":
        return ThreadRelay()
    relay = ProcessRelay(run_dir / "endpoint-relay.sock", linger)
    try:
        relay.start()
    except OSError as exc:
        log.error("endpoint: %s; relaying inside cygnetd instead (a restart cuts those "
                  "connections)", exc)
        return ThreadRelay()
    return relay


def relay_pid(path: Path) -> int | None:
    """The relay process serving `path` (tests and `ps`-free checks)."""
    sock = dial(path)
    if sock is None:
        return None
    with sock:
        return peer_ids(sock)[0]
