"""The endpoint's own TLS: errors for clients it cannot route, and `options=endpoint=`.

A client without SNI (an IP address, sslsni=0) or with a name outside
endpoint_domain gets TLS from the endpoint, with the same certificate the
branches' Postgres serves. The endpoint reads its StartupMessage, takes the
endpoint name from `options`, opens TLS to the branch and relays both
streams in Python; the branch's Postgres still checks the password (SCRAM).
A client the endpoint cannot route gets a Postgres ErrorResponse.

cygnetd uses this for the errors it answers itself; `options` clients are
served by the relay process (route_link.py), which outlives cygnetd, or by
cygnetd when the relay runs as a thread inside it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from cygnet.endpoint import protocol as P
from cygnet.endpoint.protocol import Unroutable
from cygnet.endpoint.wire import dial_tls_backend
from cygnet.names import shown

log = logging.getLogger("cygnet.endpoint")

HANDSHAKE_TIMEOUT = 10.0
_relaying = 0  # options= sessions this process relays now


def relaying() -> int:
    """How many options= sessions this process relays now (a gauge)."""
    return _relaying


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["postgresql"])  # PostgreSQL 17's sslnegotiation=direct
    return ctx


def backend_context(ca: Path | None) -> ssl.SSLContext:
    """TLS to a branch on this host: its certificate is checked against the host's CA."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    ctx.check_hostname = False  # the address is the host's own; the CA is what matters
    if ca is None:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# An endpoint name to the port of its running branch (woken if need be); raises
# Unroutable. cygnetd asks its router; the relay process asks cygnetd.
Resolve = Callable[[str], Awaitable[int]]


class _Pipe(asyncio.Protocol):
    """One side of a relayed connection: what arrives is written to the other side's
    transport (`to`) as it comes, with no task or buffer in between; until `to` is
    set (the client's StartupMessage), it is held. Flow control crosses over: a
    full write buffer here pauses reading on the other side."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.to: asyncio.Transport | None = None
        self.held = bytearray()
        self.arrived = asyncio.Event()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.to is None:
            self.held += data
            self.arrived.set()
        else:
            self.to.write(data)

    def eof_received(self) -> bool:
        return False  # TLS has no half-close: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.arrived.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        if self.to is not None:  # this side's writes come from the other side
            self.to.pause_reading()

    def resume_writing(self) -> None:
        if self.to is not None:
            self.to.resume_reading()

    async def take(self, n: int) -> bytes:
        """The next `n` bytes held (before `to` is set)."""
        while len(self.held) < n:
            if self.closed.done():
                raise asyncio.IncompleteReadError(bytes(self.held), n)
            self.arrived.clear()
            await self.arrived.wait()
        data = bytes(self.held[:n])
        del self.held[:n]
        return data


class Terminator:
    def __init__(self, resolve: Resolve, backend_address: str, server_ctx: ssl.SSLContext,
                 backend_ctx: ssl.SSLContext, refused: Callable[[str], None]) -> None:
        self.resolve, self.backend_address = resolve, backend_address
        self.server_ctx, self.backend_ctx = server_ctx, backend_ctx
        self.refused = refused  # counts a connection answered with an error (SQLSTATE)

    async def serve(self, sock: socket.socket, failure: Unroutable | None) -> None:
        """TLS with the client, then an error (`failure`) or a route by options."""
        loop = asyncio.get_running_loop()
        transport, client = await loop.connect_accepted_socket(
            _Pipe, sock=sock, ssl=self.server_ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                startup = await _read_startup(client)
            if failure is None:
                failure = await self._route(startup, client)
            if failure is not None:
                self.refused(failure.sqlstate)
                transport.write(P.error_response(failure.sqlstate, failure.message,
                                                 hint=failure.hint))
        except P.ProtocolError as exc:
            self.refused(P.PROTOCOL_VIOLATION)
            transport.write(P.error_response(P.PROTOCOL_VIOLATION, str(exc)))
        except BaseException:
            # A client gone or too slow: drop its socket from the event loop now. A
            # graceful TLS close would keep it registered while the caller closes the
            # descriptor, and the next client given that number would find it taken.
            transport.abort()
            raise
        finally:
            transport.close()  # after what is buffered has been sent

    async def _route(self, startup: P.Startup, client: _Pipe) -> Unroutable | None:
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
        loop = asyncio.get_running_loop()
        try:
            sock = await dial_tls_backend(self.backend_address, port)
            _, branch = await loop.create_connection(
                _Pipe, sock=sock, ssl=self.backend_ctx, server_hostname="",
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            return Unroutable(P.CANNOT_CONNECT_NOW, f"endpoint {shown(name)}: the branch cannot be "
                              f"reached: {exc}")
        await _relay(client, branch, startup.encode())
        return None


async def _read_startup(client: _Pipe) -> P.Startup:
    length, code = P.request_header(await client.take(8))
    if code in (P.SSL_REQUEST, P.GSSENC_REQUEST):
        raise P.ProtocolError("encryption requested twice")
    if code == P.CANCEL_REQUEST:
        raise P.ProtocolError("cancel requests go through TLS SNI or plain TCP")
    return P.parse_startup(code, await client.take(length - 8))


async def _relay(client: _Pipe, branch: _Pipe, startup: bytes) -> None:
    """Cross-wires the two sides until either closes; the other then closes once
    what it still has to send is sent."""
    assert client.transport is not None and branch.transport is not None
    global _relaying
    _relaying += 1
    try:
        branch.transport.write(startup + bytes(client.held))
        client.transport.write(bytes(branch.held))  # (a branch says nothing before it)
        client.held.clear()
        branch.held.clear()
        client.to, branch.to = branch.transport, client.transport
        await asyncio.wait([client.closed, branch.closed], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        branch.transport.abort()
        raise
    finally:
        _relaying -= 1
        branch.transport.close()


def cancel_key(rest: bytes) -> tuple[int, int]:
    """(backend pid, secret key) of a CancelRequest's last 8 bytes."""
    pid, key = struct.unpack("!II", rest[:8])
    return pid, key
