"""The endpoint's own TLS: errors for clients it cannot route, and `options=endpoint=`.

A client without SNI (an IP address, sslsni=0) or with a name outside
endpoint_domain gets TLS from the endpoint, with the same certificate the
branches' Postgres serves. The endpoint reads its StartupMessage, takes the
endpoint name from `options`, opens TLS to the branch, and hands both TLS
sessions to the C relay (native/tls.c, native/relay_core.c), which moves the
bytes without Python; the branch's Postgres still checks the password
(SCRAM). A client the endpoint cannot route gets a Postgres ErrorResponse.

The TLS is OpenSSL's, through the C extension, not Python's `ssl`: a session
must outlive the handshake in the relay thread, and Python's cannot be handed
over. asyncio only waits for the sockets to be ready.

cygnetd uses this for the errors it answers itself; `options` clients are
served by the relay process (route_link.py), which outlives cygnetd, or by
cygnetd when the relay runs as a thread inside it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from cygnet import _native
from cygnet.endpoint import protocol as P
from cygnet.endpoint.protocol import Unroutable
from cygnet.endpoint.wire import close_gently, dial_tls_backend, ready
from cygnet.names import shown

log = logging.getLogger("cygnet.endpoint")

HANDSHAKE_TIMEOUT = 10.0
WANT_READ = 1  # a session call waits for its socket to be readable (2: writable)


def relaying() -> int:
    """How many options= sessions this process relays now (a gauge)."""
    return _native.relay_tls_active()


def tls_context(cert: Path, key: Path, ca: Path | None) -> _native.TlsContext:
    """The host's certificate toward clients; toward branches, their certificate is
    checked against the host's CA (not the name: the address is the host's own)."""
    return _native.TlsContext(cert, key, ca)


# An endpoint name to the port of its running branch (woken if need be); raises
# Unroutable. cygnetd asks its router; the relay process asks cygnetd.
Resolve = Callable[[str], Awaitable[int]]


class Tls:
    """A TLS session on a non-blocking socket, driven until the relay takes it."""

    def __init__(self, sock: socket.socket, session: _native.TlsSession) -> None:
        self.sock, self.session = sock, session

    async def _wait(self, want: int) -> None:
        """Until the socket is ready for what the session call waits for."""
        await ready(self.sock, writable=want != WANT_READ)

    async def handshake(self) -> None:
        while want := self.session.handshake():
            await self._wait(want)

    async def take(self, n: int) -> bytes:
        """Exactly `n` decrypted bytes; what follows stays in the session."""
        data = b""
        while len(data) < n:
            want, chunk = self.session.recv(n - len(data))
            if want:
                await self._wait(want)
            elif not chunk:
                raise asyncio.IncompleteReadError(data, n)
            data += chunk
        return data

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            want, n = self.session.send(view)
            if want:
                await self._wait(want)
            view = view[n:]


class Terminator:
    def __init__(self, resolve: Resolve, backend_address: str, tls: _native.TlsContext,
                 refused: Callable[[str], None]) -> None:
        self.resolve, self.backend_address, self.tls = resolve, backend_address, tls
        self.refused = refused  # counts a connection answered with an error (SQLSTATE)

    async def serve(self, sock: socket.socket, failure: Unroutable | None) -> None:
        """TLS with the client, then an error (`failure`) or a route by options. The
        socket is closed, or belongs to the relay, when this returns."""
        client = Tls(sock, self.tls.accept(sock))
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await client.handshake()
                startup = await _read_startup(client)
            if failure is None:
                failure = await self._route(startup, client)
                if failure is None:
                    return
            self.refused(failure.sqlstate)
            answer = P.error_response(failure.sqlstate, failure.message, hint=failure.hint)
        except P.ProtocolError as exc:
            self.refused(P.PROTOCOL_VIOLATION)
            answer = P.error_response(P.PROTOCOL_VIOLATION, str(exc))
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            await client.send(answer)
        client.session.close_notify()
        close_gently(sock)

    async def _route(self, startup: P.Startup, client: Tls) -> Unroutable | None:
        name, rest = P.split_options(startup.params.get("options", ""))
        if not name:
            return Unroutable(P.REJECTED_CONNECTION, "no endpoint named in the connection",
                              "connect to DB--BRANCH.DOMAIN (TLS SNI), or add "
                              "options=endpoint=DB--BRANCH to the connection string")
        try:
            port = await self.resolve(name)
        except Unroutable as exc:
            return exc
        if rest:
            startup.params["options"] = rest
        else:
            startup.params.pop("options", None)
        try:
            sock = await dial_tls_backend(self.backend_address, port)
        except (OSError, TimeoutError) as exc:
            return _unreachable(name, exc)
        try:
            branch = Tls(sock, self.tls.connect(sock))
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await branch.handshake()
                await branch.send(startup.encode())
            _native.relay_add_tls(client.sock.fileno(), client.session, sock.fileno(),
                                  branch.session)
        except (OSError, TimeoutError) as exc:
            sock.close()
            return _unreachable(name, exc)
        client.sock.detach()  # both descriptors are the relay's now
        sock.detach()
        return None


def _unreachable(name: str, exc: BaseException) -> Unroutable:
    why = str(exc) or ("no TLS handshake in time" if isinstance(exc, TimeoutError)
                       else type(exc).__name__)
    return Unroutable(P.CANNOT_CONNECT_NOW,
                      f"endpoint {shown(name)}: the branch cannot be reached: {why}")


async def _read_startup(client: Tls) -> P.Startup:
    length, code = P.request_header(await client.take(8))
    if code in (P.SSL_REQUEST, P.GSSENC_REQUEST):
        raise P.ProtocolError("encryption requested twice")
    if code == P.CANCEL_REQUEST:
        raise P.ProtocolError("cancel requests go through TLS SNI or plain TCP")
    return P.parse_startup(code, await client.take(length - 8))


def cancel_key(rest: bytes) -> tuple[int, int]:
    """(backend pid, secret key) of a CancelRequest's last 8 bytes."""
    pid, key = struct.unpack("!II", rest[:8])
    return pid, key
