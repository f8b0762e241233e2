"""options=endpoint= clients in the relay process: a real relay process, real TLS, a
stand-in branch that speaks the startup protocol, and cygnetd's real route link."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from pathlib import Path

import pytest

from cygnet import pki
from cygnet.endpoint import protocol as P
from cygnet.endpoint.protocol import Unroutable
from cygnet.endpoint.relay_link import ProcessRelay
from cygnet.endpoint.route_link import RouteAnswerer


@pytest.fixture
def tls(tmp_path: Path) -> pki.Issued:
    pki.init_ca(tmp_path / "ca")
    return pki.issue(tmp_path / "ca", "client", "branch", ["127.0.0.1"], out=tmp_path / "tls")


class Branch:
    """Answers the SSLRequest, TLS with the branch's certificate, reads the startup,
    says b"OK" + the startup's parameters, then echoes what it gets."""

    def __init__(self, tls: pki.Issued) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(tls.cert, tls.key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            assert conn.recv(8) == P.SSL_REQUEST_BYTES
            conn.sendall(b"S")
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                length = struct.unpack("!I", tls.recv(4))[0]
                body = _recv_exact(tls, length - 4)
                tls.sendall(b"OK" + body[4:])
                while data := tls.recv(65536):
                    tls.sendall(data)


def _recv_exact(sock: ssl.SSLSocket | socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class Client:
    """A client without SNI, and cygnetd's accept before the hand-over."""

    def __init__(self, tls: pki.Issued, relay: ProcessRelay, endpoint: str) -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            raw = socket.create_connection(listener.getsockname(), timeout=20)
            accepted, _ = listener.accept()
        raw.sendall(P.SSL_REQUEST_BYTES)
        assert accepted.recv(8) == P.SSL_REQUEST_BYTES
        accepted.sendall(b"S")
        assert raw.recv(1) == b"S"
        relay.hand_over_tls(accepted)  # what cygnetd does with a client without SNI
        ctx = ssl.create_default_context(cafile=str(tls.ca))
        ctx.check_hostname = False
        self.sock = ctx.wrap_socket(raw)  # the relay process answers the handshake
        params = b"user\0postgres\0options\0endpoint=" + endpoint.encode() + b" -c x=1\0\0"
        self.sock.sendall(struct.pack("!II", 8 + len(params), P.PROTOCOL_3) + params)

    def first(self) -> bytes:
        return self.sock.recv(65536)

    def echo(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return _recv_exact(self.sock, len(data))


def test_options_clients_are_terminated_in_the_relay_and_outlive_cygnetd(
        tls: pki.Issued, control: Path) -> None:
    branch = Branch(tls)
    files = {"cert": str(tls.cert), "key": str(tls.key), "ca": str(tls.ca),
             "backend": "127.0.0.1"}
    refused: list[str] = []
    held = asyncio.Event()

    async def resolve(name: str) -> int:
        if name == "slow":
            await held.wait()  # cygnetd goes before it answers
        if name in ("shop", "slow"):
            return branch.port
        raise Unroutable(P.INVALID_CATALOG_NAME, f"endpoint {name!r} does not exist")

    async def scenario() -> None:
        relay = ProcessRelay(control, linger=5)
        await asyncio.to_thread(relay.start)
        routes = RouteAnswerer(control, files, resolve, refused.append)
        assert await routes.start()
        # Routed: the branch got the startup without endpoint=, and bytes flow.
        kept = await asyncio.to_thread(Client, tls, relay, "shop")
        assert await asyncio.to_thread(kept.first) == b"OK" + \
            b"user\0postgres\0options\0-c x=1\0\0"
        assert await asyncio.to_thread(kept.echo, b"x" * 200_000) == b"x" * 200_000
        assert await asyncio.to_thread(relay.options_relaying) == 1
        # Unknown: a Postgres error from the relay, counted by cygnetd.
        lost = await asyncio.to_thread(Client, tls, relay, "nothing")
        error = await asyncio.to_thread(lost.first)
        assert error[:1] == b"E" and b"C3D000\0" in error
        assert await asyncio.to_thread(relay.options_relaying) == 1  # kept, not lost
        # cygnetd goes while a question is open: the next one is asked it again.
        waiting = await asyncio.to_thread(Client, tls, relay, "slow")
        await asyncio.sleep(0.3)
        await routes.close()
        relay.close()
        assert await asyncio.to_thread(kept.echo, b"still") == b"still"
        again = ProcessRelay(control, linger=5)
        await asyncio.to_thread(again.start)
        held.set()
        routes = RouteAnswerer(control, files, resolve, refused.append)
        assert await routes.start()
        assert (await asyncio.to_thread(waiting.first)).startswith(b"OK")
        assert await asyncio.to_thread(waiting.echo, b"after") == b"after"
        assert await asyncio.to_thread(kept.echo, b"after") == b"after"
        assert await asyncio.to_thread(again.options_relaying) == 2
        await routes.close()
        again.close()

    asyncio.run(scenario())
    assert refused == ["3D000"]


def test_a_relay_that_does_not_answer_the_route_link_is_left_alone(tmp_path: Path) -> None:
    """A relay process from before the route link ignores b"Q": cygnetd goes on
    terminating options= clients itself instead of handing them over."""
    path = tmp_path / "old.sock"
    old = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old.bind(str(path))
    old.listen(4)

    async def resolve(name: str) -> int:
        raise AssertionError(name)

    async def scenario() -> bool:
        return await RouteAnswerer(path, {}, resolve, lambda _: None).start()

    try:
        assert asyncio.run(scenario()) is False
    finally:
        old.close()
