"""TLS ended in C (native/tls.c) and relayed by the C relay, against Python's ssl as peers.

client (Python ssl) <-TLS-> [accept session | relay | connect session] <-TLS-> server
(Python ssl), on real loopback sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import threading
import time
from pathlib import Path

import pytest

from cygnet import _native, pki
from cygnet.endpoint.terminate import Tls, tls_context
from tests.unit.test_endpoint_relay import _pair, _recv_all


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> pki.Issued:
    directory = tmp_path_factory.mktemp("pki")
    pki.init_ca(directory)
    return pki.issue(directory, "host", "h1", ["127.0.0.1"])


async def _relayed(files: pki.Issued) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """Both outer TLS ends (blocking, in threads) around a relayed pair."""
    ctx = tls_context(files.cert, files.key, files.ca)
    client_raw, inner_c = _pair()
    inner_s, server_raw = _pair()
    for s in (inner_c, inner_s):
        s.setblocking(False)
    client_ctx = ssl.create_default_context(cafile=str(files.ca))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(files.cert, files.key)
    outer: dict[str, ssl.SSLSocket] = {}

    def wrap_client() -> None:
        outer["client"] = client_ctx.wrap_socket(client_raw, server_hostname="h1")

    def wrap_server() -> None:
        outer["server"] = server_ctx.wrap_socket(server_raw, server_side=True)

    threads = [threading.Thread(target=wrap_client), threading.Thread(target=wrap_server)]
    for t in threads:
        t.start()
    front, back = Tls(inner_c, ctx.accept(inner_c)), Tls(inner_s, ctx.connect(inner_s))
    async with asyncio.timeout(10):
        await asyncio.gather(front.handshake(), back.handshake())

    def join_all() -> None:
        for t in threads:
            t.join()

    await asyncio.to_thread(join_all)
    _native.relay_add_tls(inner_c.fileno(), front.session, inner_s.fileno(), back.session)
    inner_c.detach()
    inner_s.detach()
    for s in outer.values():
        s.settimeout(30)
    return outer["client"], outer["server"]


def _wait_tls_active(expected: int) -> None:
    deadline = time.monotonic() + 10
    while _native.relay_tls_active() != expected:
        assert time.monotonic() < deadline, _native.relay_tls_active()
        time.sleep(0.01)


def test_megabytes_cross_both_ways_at_once_intact(files: pki.Issued) -> None:
    before = _native.relay_tls_active()
    client, server = asyncio.run(_relayed(files))
    assert _native.relay_tls_active() == before + 1
    up, down = os.urandom(6 << 20), os.urandom(5 << 20)
    got: dict[str, bytes] = {}

    def serve() -> None:
        sender = threading.Thread(target=lambda: server.sendall(down))
        sender.start()
        got["up"] = b""
        while len(got["up"]) < len(up):
            got["up"] += server.recv(1 << 16)
        sender.join()
        server.close()  # TLS has no half-close: the relay ends the client's too

    t = threading.Thread(target=serve)
    t.start()
    client.sendall(up)
    got["down"] = _recv_all(client)
    t.join()
    client.close()
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
    _wait_tls_active(before)


def test_small_messages_back_and_forth(files: pki.Issued) -> None:
    """Postgres' pattern: one short question, one short answer, many times."""
    client, server = asyncio.run(_relayed(files))
    for i in range(500):
        client.sendall(f"Q{i}".encode())
        assert server.recv(100) == f"Q{i}".encode()
        server.sendall(f"A{i}".encode() * 3)
        assert client.recv(100) == f"A{i}".encode() * 3
    client.close()
    assert server.recv(10) == b""
    server.close()


def test_bad_files_name_what_failed(tmp_path: Path, files: pki.Issued) -> None:
    with pytest.raises(OSError, match="certificate cannot be loaded"):
        _native.TlsContext(tmp_path / "missing.pem", files.key)
    with pytest.raises(OSError, match="key cannot be loaded"):
        _native.TlsContext(files.cert, files.ca)  # a certificate where the key should be
    with pytest.raises(OSError, match="CA cannot be loaded"):
        _native.TlsContext(files.cert, files.key, tmp_path / "missing-ca.pem")


def test_a_session_handed_over_cannot_be_used(files: pki.Issued) -> None:
    ctx = _native.TlsContext(files.cert, files.key, files.ca)
    a, b = _pair()
    c, d = _pair()
    one, two = ctx.accept(a), ctx.connect(c)
    with pytest.raises(ValueError, match="own descriptor"):
        _native.relay_add_tls(b.fileno(), one, d.fileno(), two)
    _native.relay_add_tls(a.fileno(), one, c.fileno(), two)
    a.detach()
    c.detach()
    with pytest.raises(ValueError, match="handed to the relay"):
        one.handshake()
    b.close()
    d.close()


def test_a_client_that_is_not_tls_fails_the_handshake(files: pki.Issued) -> None:
    ctx = _native.TlsContext(files.cert, files.key)
    a, b = _pair()
    a.setblocking(False)
    b.sendall(b"GET / HTTP/1.0\r\n\r\n")

    async def handshake() -> None:
        await Tls(a, ctx.accept(a)).handshake()

    with pytest.raises(OSError, match="TLS: handshake failed"):
        asyncio.run(handshake())
    a.close()
    b.close()


def test_a_peer_gone_mid_handshake_is_named(files: pki.Issued) -> None:
    ctx = _native.TlsContext(files.cert, files.key, files.ca)
    a, b = _pair()
    a.setblocking(False)
    b.close()  # a branch whose Postgres stopped as the endpoint dialled it

    async def handshake() -> None:
        await Tls(a, ctx.connect(a)).handshake()

    with pytest.raises(OSError, match=r"TLS: handshake failed: .*(closed|eof|EOF)") as caught:
        asyncio.run(handshake())
    assert "no detail" not in str(caught.value)
    a.close()
