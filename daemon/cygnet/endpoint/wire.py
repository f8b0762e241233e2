"""Socket helpers for the startup phase: exact reads, peeking, dialling a branch."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable

from cygnet.endpoint import protocol as P
from cygnet.endpoint.sni import Hello, NotTls, parse_hello

log = logging.getLogger("cygnet.endpoint")


class Gone(Exception):
    """The peer closed the connection."""


async def recv_exact(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise Gone()
        data += chunk
    return data


async def ready(sock: socket.socket, *, writable: bool = False) -> None:
    """Until `sock` is readable (or writable)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    fd = sock.fileno()
    add, remove = ((loop.add_writer, loop.remove_writer) if writable
                   else (loop.add_reader, loop.remove_reader))
    add(fd, wake)
    try:
        await done
    finally:
        remove(fd)


async def peek_byte(sock: socket.socket) -> bytes:
    """The first unread byte, left in the socket."""
    while True:
        await ready(sock)
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        if not data:
            raise Gone()
        return data


async def peek_hello(sock: socket.socket) -> Hello:
    """The client's ClientHello, left unread in the socket for whoever answers it."""
    seen = -1
    while True:
        await ready(sock)
        try:
            data = sock.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        if not data:
            raise Gone()
        hello = parse_hello(data)
        if hello is not None:
            return hello
        if len(data) == seen:  # the rest is still on its way: readable stays true
            if _peer_finished(sock):  # ...or never comes: half a hello, then EOF
                raise Gone()
            await asyncio.sleep(0.002)
        seen = len(data)


_TCP_CLOSE_WAIT = 8  # linux/tcp_states.h: the peer has sent its FIN


def _peer_finished(sock: socket.socket) -> bool:
    """Whether the client has closed its side: a peek cannot see EOF behind unread bytes."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
    except OSError:
        return False
    return info[0] == _TCP_CLOSE_WAIT


def tune(sock: socket.socket) -> None:
    """Small messages go out at once: Postgres' protocol is request/response."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def dial_tls_backend(address: str, port: int) -> socket.socket:
    """A TCP connection to a branch that has agreed to TLS (SSLRequest answered 'S')."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        tune(sock)
        await loop.sock_connect(sock, (address, port))
        await loop.sock_sendall(sock, P.SSL_REQUEST_BYTES)
        answer = await recv_exact(sock, 1)
    except BaseException:
        sock.close()
        raise
    if answer != b"S":
        sock.close()
        raise OSError(f"the branch's Postgres refused TLS (answered {answer!r})")
    return sock


def close_gently(sock: socket.socket) -> None:
    """Closes after an error message: unread input left behind would make the kernel
    send a reset, and a reset can destroy the message before the client reads it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536, socket.MSG_DONTWAIT):
            pass
    except OSError:
        pass
    sock.close()


async def guarded(sock: socket.socket, work: Awaitable[None], what: str) -> None:
    """Runs `work` for the client on `sock`. A client that hangs up, times out,
    fails TLS or speaks something else is dropped quietly; anything else is logged."""
    try:
        await work
    except (Gone, OSError, TimeoutError, NotTls, P.ProtocolError,
            asyncio.IncompleteReadError) as exc:
        log.debug("%s: client dropped: %s", what, exc or type(exc).__name__)
        close_gently(sock)
    except Exception:
        log.exception("%s failed", what)
        sock.close()
