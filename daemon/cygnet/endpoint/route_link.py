"""`options=endpoint=` connections in the relay process, routed by cygnetd.

A client without SNI names its endpoint inside TLS, so the endpoint must
terminate TLS to read it (terminate.py). cygnetd hands such a client's socket
to the relay process (b"T", one descriptor, on the control socket), which
terminates TLS, reads the StartupMessage and relays both TLS streams itself:
a cygnetd restart cuts none of them. Only cygnetd knows where a name goes
and can wake a branch, so the relay asks it, over a second connection to the
control socket:

- cygnetd sends b"Q" + JSON (certificate, key and CA paths, the branches'
  address); the relay answers b"q" and asks this connection from then on.
  A relay that does not answer predates this: cygnetd terminates those
  connections itself, as with `endpoint_relay = "thread"`.
- relay: b"R" {"id", "name"}; cygnetd: b"r" {"id", "port"}, or {"id",
  "sqlstate", "message", "hint"} for a client that gets an error.
- relay: b"N" {"sqlstate"}: a client it answered with an error (metrics).

Questions outstanding when cygnetd goes are asked again of the next one: a
client connecting during a restart waits (up to ROUTE_TIMEOUT) instead of
failing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cygnet.endpoint import protocol as P
from cygnet.endpoint.protocol import Unroutable
from cygnet.endpoint.terminate import Resolve, Terminator, tls_context
from cygnet.endpoint.wire import guarded
from cygnet.names import shown

log = logging.getLogger("cygnet.endpoint")

OP_TERMINATE = b"T"
OP_ROUTER = b"Q"
OP_ROUTER_OK = b"q"
OP_ASK = b"R"
OP_ANSWER = b"r"
OP_REFUSED = b"N"
MAX_MESSAGE = 8192
# How long a client of the relay waits for an answer: a wake (30 s at most),
# or a cygnetd restart.
ROUTE_TIMEOUT = 60.0
HELLO_TIMEOUT = 2.0
REDIAL_MAX = 1.0


def encode(op: bytes, body: dict[str, Any]) -> bytes:
    return op + json.dumps(body).encode()


def decode(data: bytes) -> tuple[bytes, dict[str, Any]]:
    try:
        body = json.loads(data[1:]) if len(data) > 1 else {}
    except ValueError:
        body = {}
    return data[:1], body if isinstance(body, dict) else {}


async def _send(sock: socket.socket, lock: asyncio.Lock, message: bytes) -> bool:
    async with lock:  # one writer at a time: asyncio allows one waiter per descriptor
        try:
            await asyncio.get_running_loop().sock_sendall(sock, message)
            return True
        except OSError:
            return False


class RouteAsker:
    """The relay process's side: terminates clients' TLS, asks cygnetd for routes."""

    def __init__(self) -> None:
        self.router: socket.socket | None = None
        self.terminator: Terminator | None = None
        self.pending: dict[int, tuple[str, asyncio.Future[int]]] = {}
        self.sessions: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    def attach(self, peer: socket.socket, files: dict[str, Any]) -> None:
        """`peer`, a cygnetd, answers from now on; `files` are its TLS files."""
        try:
            tls = tls_context(Path(files["cert"]), Path(files["key"]),
                              Path(files["ca"]) if files.get("ca") else None)
            address = str(files["backend"])
        except (KeyError, OSError) as exc:
            log.error("relay: cannot terminate TLS with cygnetd's files: %s", exc)
            return  # no b"q": cygnetd terminates those connections itself
        self.router = peer
        self.terminator = Terminator(self.ask, address, tls, self._refused)
        self.ready.set()
        asked = [encode(OP_ASK, {"id": i, "name": name}) for i, (name, _) in self.pending.items()]
        self._spawn(self._greet(peer, asked))

    async def _greet(self, peer: socket.socket, asked: list[bytes]) -> None:
        for message in [OP_ROUTER_OK, *asked]:
            await _send(peer, self._lock, message)

    def detach(self, peer: socket.socket) -> None:
        if peer is self.router:
            self.router = None
            self.ready.clear()

    def answer(self, body: dict[str, Any]) -> None:
        entry = self.pending.pop(body.get("id", -1), None)
        if entry is None or entry[1].done():
            return  # asked twice across a restart, answered twice
        if "port" in body:
            entry[1].set_result(int(body["port"]))
        else:
            entry[1].set_exception(Unroutable(str(body.get("sqlstate", P.CANNOT_CONNECT_NOW)),
                                              str(body.get("message", "")),
                                              str(body.get("hint", ""))))

    def terminate(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._spawn(self._session(sock))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)

    async def _session(self, sock: socket.socket) -> None:
        try:
            async with asyncio.timeout(ROUTE_TIMEOUT):
                await self.ready.wait()  # the router connects just after the first hand-over
        except TimeoutError:
            sock.close()
            return
        assert self.terminator is not None
        await guarded(sock, self.terminator.serve(sock, None), "relay: options=endpoint=")

    async def ask(self, name: str) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        ident = next(self._ids)
        self.pending[ident] = (name, future)
        try:
            async with asyncio.timeout(ROUTE_TIMEOUT):
                if self.router is not None:  # else: asked when the next cygnetd comes
                    await _send(self.router, self._lock,
                                encode(OP_ASK, {"id": ident, "name": name}))
                return await future
        except TimeoutError:
            raise Unroutable(P.CANNOT_CONNECT_NOW, f"endpoint {shown(name)}: cygnetd did not route "
                             f"the connection in {ROUTE_TIMEOUT:.0f} s",
                             "cygnetd may be restarting; connect again") from None
        finally:
            self.pending.pop(ident, None)

    def _refused(self, sqlstate: str) -> None:
        if self.router is not None:
            self._spawn(_send(self.router, self._lock, encode(OP_REFUSED,
                                                              {"sqlstate": sqlstate})))


class RouteAnswerer:
    """cygnetd's side: answers the relay process's questions with `resolve`."""

    def __init__(self, path: Path, files: dict[str, str], resolve: Resolve,
                 refused: Callable[[str], None]) -> None:
        self.path, self.files = path, files
        self.resolve, self.refused = resolve, refused
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    async def start(self) -> bool:
        """True when the relay terminates options connections from now on."""
        self._sock = await asyncio.to_thread(self._hello)
        if self._sock is None:
            return False
        self._task = asyncio.create_task(self._serve())
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._answers):
            task.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _hello(self) -> socket.socket | None:
        from cygnet.endpoint.relayd import dial

        sock = dial(self.path, timeout=HELLO_TIMEOUT)
        if sock is None:
            return None
        try:
            sock.send(encode(OP_ROUTER, self.files))
            ok = sock.recv(MAX_MESSAGE) == OP_ROUTER_OK
        except OSError:  # a timeout too: a relay from before this answers nothing
            ok = False
        if not ok:
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    async def _serve(self) -> None:
        loop, wait = asyncio.get_running_loop(), 0.1
        while True:
            sock = self._sock
            if sock is None:  # the relay went; the control link starts the next one
                await asyncio.sleep(wait)
                wait = min(wait * 2, REDIAL_MAX)
                self._sock = await asyncio.to_thread(self._hello)
                continue
            wait = 0.1
            try:
                data = await loop.sock_recv(sock, MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                log.warning("endpoint: the relay process's route link closed; dialling again")
                sock.close()
                self._sock = None
                continue
            op, body = decode(data)
            if op == OP_ASK:
                task = asyncio.create_task(self._answer(sock, body))
                self._answers.add(task)
                task.add_done_callback(self._answers.discard)
            elif op == OP_REFUSED:
                self.refused(str(body.get("sqlstate", "")))

    async def _answer(self, sock: socket.socket, body: dict[str, Any]) -> None:
        ident, name = body.get("id"), str(body.get("name", ""))
        reply: dict[str, Any] = {"id": ident}
        try:
            reply["port"] = await self.resolve(name)
        except Unroutable as exc:
            reply |= {"sqlstate": exc.sqlstate, "message": exc.message, "hint": exc.hint}
        except Exception as exc:
            log.exception("endpoint: routing %r for the relay failed", name)
            reply |= {"sqlstate": P.CANNOT_CONNECT_NOW,
                      "message": f"endpoint {shown(name)} cannot be routed now: {exc}"[:500]}
        await _send(sock, self._lock, encode(OP_ANSWER, reply))
