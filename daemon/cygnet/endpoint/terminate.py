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
CHUNK = 64 * 1024
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


class Terminator:
    def __init__(self, resolve: Resolve, backend_address: str, server_ctx: ssl.SSLContext,
                 backend_ctx: ssl.SSLContext, refused: Callable[[str], None]) -> None:
        self.resolve, self.backend_address = resolve, backend_address
        self.server_ctx, self.backend_ctx = server_ctx, backend_ctx
        self.refused = refused  # counts a connection answered with an error (SQLSTATE)

    async def serve(self, sock: socket.socket, failure: Unroutable | None) -> None:
        """TLS with the client, then an error (`failure`) or a route by options."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=CHUNK)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol, sock=sock, ssl=self.server_ctx,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                startup = await _read_startup(reader)
            if failure is None:
                failure = await self._route(startup, reader, writer)
            if failure is not None:
                self.refused(failure.sqlstate)
                writer.write(P.error_response(failure.sqlstate, failure.message,
                                              hint=failure.hint))
                await writer.drain()
        except P.ProtocolError as exc:
            self.refused(P.PROTOCOL_VIOLATION)
            writer.write(P.error_response(P.PROTOCOL_VIOLATION, str(exc)))
            await writer.drain()
        except BaseException:
            # A client gone or too slow: drop its socket from the event loop now. A
            # graceful TLS close would keep it registered while the caller closes the
            # descriptor, and the next client given that number would find it taken.
            transport.abort()
            raise
        finally:
            writer.close()

    async def _route(self, startup: P.Startup, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> Unroutable | None:
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
            backend = await dial_tls_backend(self.backend_address, port)
            b_reader, b_writer = await asyncio.open_connection(
                sock=backend, ssl=self.backend_ctx, server_hostname="",
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT, limit=CHUNK)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            return Unroutable(P.CANNOT_CONNECT_NOW, f"endpoint {shown(name)}: the branch cannot be "
                              f"reached: {exc}")
        b_writer.write(startup.encode())
        global _relaying
        _relaying += 1
        try:
            await _relay(reader, writer, b_reader, b_writer)
        finally:
            _relaying -= 1
        return None


async def _read_startup(reader: asyncio.StreamReader) -> P.Startup:
    length, code = P.request_header(await reader.readexactly(8))
    if code in (P.SSL_REQUEST, P.GSSENC_REQUEST):
        raise P.ProtocolError("encryption requested twice")
    if code == P.CANCEL_REQUEST:
        raise P.ProtocolError("cancel requests go through TLS SNI or plain TCP")
    return P.parse_startup(code, await reader.readexactly(length - 8))


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        dst.close()


async def _relay(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter,
                 b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
    up = asyncio.create_task(_pump(c_reader, b_writer))
    down = asyncio.create_task(_pump(b_reader, c_writer))
    try:
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down):
            task.cancel()
        b_writer.close()
        c_writer.close()


def cancel_key(rest: bytes) -> tuple[int, int]:
    """(backend pid, secret key) of a CancelRequest's last 8 bytes."""
    pid, key = struct.unpack("!II", rest[:8])
    return pid, key
