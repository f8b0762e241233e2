"""The C relay (native/relay_core.c) on real loopback TCP sockets."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from cygnet import _native


def _pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of one loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    return a, b


def _relayed() -> tuple[socket.socket, socket.socket]:
    """client <-> [relay] <-> server: returns the outer ends."""
    client, inner_c = _pair()
    inner_s, server = _pair()
    for s in (inner_c, inner_s):
        s.setblocking(False)
    _native.relay_add(inner_c.fileno(), inner_s.fileno())
    inner_c.detach()
    inner_s.detach()
    for s in (client, server):
        s.settimeout(30)
    return client, server


def _recv_all(s: socket.socket) -> bytes:  # (an ssl.SSLSocket too)
    chunks = []
    while chunk := s.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _wait_active(expected: int) -> None:
    deadline = time.monotonic() + 10
    while _native.relay_stats()[0] != expected:
        assert time.monotonic() < deadline, _native.relay_stats()
        time.sleep(0.01)


@pytest.fixture
def idle() -> Iterator[int]:
    before = _native.relay_stats()[0]
    yield before
    _wait_active(before)


def test_bytes_cross_both_ways_at_once_intact(idle: int) -> None:
    client, server = _relayed()
    up, down = os.urandom(8 << 20), os.urandom(6 << 20)
    got: dict[str, bytes] = {}

    def send() -> None:
        server.sendall(down)
        server.shutdown(socket.SHUT_WR)

    def serve() -> None:
        sender = threading.Thread(target=send)
        sender.start()
        got["up"] = _recv_all(server)
        sender.join()

    t = threading.Thread(target=serve)
    t.start()
    client.sendall(up)
    client.shutdown(socket.SHUT_WR)
    got["down"] = _recv_all(client)
    t.join()
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
    client.close()
    server.close()


def test_a_half_close_lets_the_other_side_answer(idle: int) -> None:
    client, server = _relayed()
    client.sendall(b"question")
    client.shutdown(socket.SHUT_WR)
    assert _recv_all(server) == b"question"  # end of file arrives after the data
    server.sendall(b"answer after EOF")
    server.close()
    assert _recv_all(client) == b"answer after EOF"
    client.close()


def test_a_reset_closes_the_other_side(idle: int) -> None:
    client, server = _relayed()
    client.sendall(b"x")
    assert server.recv(1) == b"x"
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    client.close()  # RST
    assert server.recv(10) == b""
    server.close()


def test_many_pairs_at_once(idle: int) -> None:
    pairs = [_relayed() for _ in range(200)]
    _wait_active(idle + 200)
    for i, (client, _) in enumerate(pairs):
        client.sendall(f"ping {i}".encode())
    for i, (_, server) in enumerate(pairs):
        assert server.recv(100) == f"ping {i}".encode()
        server.sendall(f"pong {i}".encode())
    for i, (client, server) in enumerate(pairs):
        assert client.recv(100) == f"pong {i}".encode()
        client.close()
        server.close()


def test_bad_descriptors_are_refused() -> None:
    with pytest.raises(ValueError):
        _native.relay_add(-1, 5)
    with pytest.raises(ValueError):
        _native.relay_add(7, 7)
