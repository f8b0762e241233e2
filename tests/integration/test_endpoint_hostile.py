"""Hostile clients at the Postgres endpoint: a real cygnetd's endpoint on loopback.

Each probe opens a raw TCP connection and sends what no libpq would:
truncated startup packets, lengths out of range, bogus protocol versions,
garbage where a TLS ClientHello belongs, server names (SNI) that are huge or
carry control characters, endpoint names with control characters, and
clients that never finish (slowloris). Each must get a prompt, well-formed
Postgres ErrorResponse or a closed connection: never a hang beyond the
documented timeouts (docs/endpoints.md: the startup within 30 s, the
endpoint's own TLS within 10 s), never an echo of a huge value, and never an
error or traceback from the endpoint in the daemon's log.

The session's daemon serves: the probes create nothing, and its endpoint has
no endpoint_domain, so names travel in options=endpoint= (the SNI is still
peeked at and parsed, huge or not).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.harness import Daemon

pytestmark = pytest.mark.integration

DOMAIN = "pg.cygnet.test"  # names under it in the SNI: another host's, here
SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST = struct.pack("!II", 8, 80877104)
PROMPT = 5.0  # an answer to a client that has said all it will say
STARTUP_TIMEOUT = 30.0  # endpoint/server.py, documented in docs/endpoints.md
HANDSHAKE_TIMEOUT = 10.0  # endpoint/terminate.py
SLACK = 8.0  # a shared, noisy machine


@dataclass
class Site:
    daemon: Daemon
    log_start: int


@pytest.fixture(scope="module")
def site(daemon: Daemon) -> Iterator[Site]:
    yield Site(daemon, daemon.log_path.stat().st_size)


def _dial(site: Site) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", site.daemon.endpoint_port), timeout=PROMPT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return sock


def _read_to_close(sock: socket.socket | ssl.SSLSocket, limit: float) -> bytes:
    """Everything the endpoint sends until it closes; fails if it is still open at `limit`."""
    out = b""
    deadline = time.monotonic() + limit
    while True:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return out
        except TimeoutError:
            raise AssertionError(f"no close within {limit} s; got {out[:200]!r}") from None
        if not data:
            return out
        out += data


def _check_errors(data: bytes) -> list[str]:
    """The SQLSTATEs of the ErrorResponses in `data` (after any 'S'/'N'), each checked."""
    states = []
    pos = 0
    while pos < len(data):
        if data[pos:pos + 1] in (b"S", b"N"):  # answers to SSLRequest, GSSENCRequest
            pos += 1
            continue
        kind, length = data[pos:pos + 1], struct.unpack("!I", data[pos + 1:pos + 5])[0]
        assert kind == b"E", f"not an ErrorResponse: {data[:200]!r}"
        assert length < 2048, f"an error of {length} bytes: an echo"
        body = data[pos + 5:pos + 1 + length]
        fields = {f[:1]: f[1:].decode() for f in body.split(b"\0") if f}
        assert len(fields[b"C"]) == 5 and fields[b"S"] == "FATAL", fields
        assert all(ch.isprintable() for ch in fields[b"M"]), fields[b"M"]
        states.append(fields[b"C"])
        pos += 1 + length
    return states


def _plain(site: Site, payload: bytes) -> list[str]:
    """`payload` in clear, then EOF: the endpoint's answer, closed promptly."""
    with _dial(site) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return _check_errors(_read_to_close(sock, PROMPT))


def _tls(site: Site, server_name: str | None) -> ssl.SSLSocket:
    """A TLS session with the endpoint (SSLRequest first), sending `server_name` as SNI."""
    sock = _dial(site)
    sock.sendall(SSL_REQUEST)
    assert sock.recv(1) == b"S"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock, server_hostname=server_name)


def _half_close(sock: ssl.SSLSocket) -> None:
    """EOF to the endpoint, TLS left readable (SSLSocket.shutdown would drop the session)."""
    with socket.socket(fileno=os.dup(sock.fileno())) as raw:
        raw.shutdown(socket.SHUT_WR)


def _startup(version: int, params: bytes) -> bytes:
    return struct.pack("!II", 8 + len(params), version) + params


# --- strategies --------------------------------------------------------------------

_WORDS = st.binary(max_size=40) | st.sampled_from(
    [b"user", b"database", b"options", b"endpoint=nosuch", b"-c endpoint=x--y", b"\xff\xfe",
     b"application_name", b"replication", b"\x1b[31m", b"endpoint=" + b"a" * 5000])
PARAMS = st.lists(_WORDS, max_size=8).map(lambda ws: b"\0".join(ws) + b"\0\0")
VERSIONS = st.sampled_from([3 << 16, (3 << 16) | 2, 2 << 16, 4 << 16, 0, 1, 2**32 - 1,
                            80877102, 80877103, 80877104, 80877105, 1234 << 16 | 5679])
LENGTHS = st.sampled_from([0, 1, 7, 8, 9, 10000, 10001, 2**31 - 1, 2**31, 2**32 - 1])


@st.composite
def startup_packets(draw: st.DrawFn) -> bytes:
    """A startup-shaped packet: honest or lying length, any version, any parameters."""
    packet = _startup(draw(VERSIONS), draw(PARAMS))
    if draw(st.booleans()):
        packet = struct.pack("!I", draw(LENGTHS)) + packet[4:]
    if draw(st.booleans()):
        packet = packet[:draw(st.integers(0, len(packet)))]  # truncated
    return packet


PLAIN = st.one_of(
    startup_packets(),
    st.binary(max_size=64),
    st.builds(lambda p: SSL_REQUEST + p, st.binary(max_size=64)),  # garbage for a hello
    st.builds(lambda p: GSSENC_REQUEST + SSL_REQUEST + p, st.binary(max_size=32)),
    st.builds(lambda p: SSL_REQUEST + b"\x16\x03\x01" + p, st.binary(max_size=32)),
)


@seed(1311)
@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(payload=PLAIN)
def test_hostile_bytes_in_clear_are_answered_or_closed(site: Site, payload: bytes) -> None:
    for state in _plain(site, payload):
        assert state in {"08P01", "28000"}, (state, payload[:80])


@seed(1312)
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(packet=startup_packets(), sni=st.sampled_from(
    [None, "", f"a\x01b.{DOMAIN}", f"\x1b[31m.{DOMAIN}", f"nosuch.{DOMAIN}", "other.example",
     f"x--y--z.{DOMAIN}", f"br0123456789.{DOMAIN}"]))
def test_hostile_startups_inside_tls_get_postgres_errors(site: Site, packet: bytes,
                                                         sni: str | None) -> None:
    with _tls(site, sni or None) as sock:
        sock.sendall(packet)
        _half_close(sock)
        data = _read_to_close(sock, PROMPT)
    for state in _check_errors(data):
        assert state in {"08P01", "08004", "3D000"}, (state, packet[:80])


@pytest.mark.parametrize("name", ["evil\x07\x1b[2J", "a\x01b--c\x7f", "x" * 4000 + "\x1b"])
def test_control_characters_in_names_are_not_echoed(site: Site, name: str) -> None:
    with _tls(site, f"{name[:20]}.{DOMAIN}") as sock:
        sock.sendall(_startup(3 << 16, b"user\0u\0options\0endpoint=" + name.encode()
                              + b"\0\0"))
        states = _check_errors(_read_to_close(sock, PROMPT))
    assert states == ["3D000"]


def _client_hello(server_name: bytes) -> bytes:
    """A TLS 1.2 ClientHello carrying `server_name`, in as many records as it takes."""
    name = b"\x00" + struct.pack("!H", len(server_name)) + server_name
    sni = struct.pack("!HH", 0, len(name) + 2) + struct.pack("!H", len(name)) + name
    body = (b"\x03\x03" + os.urandom(32) + b"\x00" + struct.pack("!H", 2) + b"\xc0\x2f"
            + b"\x01\x00" + struct.pack("!H", len(sni)) + sni)
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"".join(b"\x16\x03\x01" + struct.pack("!H", len(hello[i:i + 16384]))
                    + hello[i:i + 16384] for i in range(0, len(hello), 16384))


@pytest.mark.parametrize("size", [300, 16_000, 65_000])
def test_a_huge_server_name_is_refused_promptly(site: Site, size: int) -> None:
    label = b"x" * (size - len(DOMAIN) - 1)
    with _dial(site) as sock:
        sock.sendall(SSL_REQUEST)
        assert sock.recv(1) == b"S"
        sock.sendall(_client_hello(label + b"." + DOMAIN.encode()))
        data = _read_to_close(sock, PROMPT)
    # A TLS alert or nothing: never the name back.
    assert b"xxxxxxxxxxxxxxxxxxxx" not in data
    assert len(data) < 2048


def _slowloris(site: Site, opening: bytes, limit: float, seen: dict[str, float]) -> None:
    """Sends `opening`, then one byte now and then, never finishing: timed to the close."""
    start = time.monotonic()
    with _dial(site) as sock:
        sock.sendall(opening)
        sock.settimeout(1.0)
        while time.monotonic() - start < limit:
            try:
                sock.sendall(b"\x00")
                if sock.recv(4096) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        seen[opening.hex()[:24]] = time.monotonic() - start


def _slow_startup_in_tls(site: Site, seen: dict[str, float]) -> None:
    """TLS done, then a startup that never completes: the endpoint's own 10 s."""
    start = time.monotonic()
    with _tls(site, None) as sock:
        sock.sendall(struct.pack("!I", 100))
        _read_to_close(sock, HANDSHAKE_TIMEOUT + SLACK)
    seen["tls"] = time.monotonic() - start
    # The next clients get the descriptor number it freed: each must still be served.
    seen["served after"] = sum(_plain(site, struct.pack("!II", 5, 0)) == ["08P01"]
                               for _ in range(3))


def test_slowloris_clients_are_cut_off_at_the_documented_timeouts(site: Site) -> None:
    """Three at once: one that dribbles its startup in clear and one inside a TLS
    record that never ends (30 s each: the startup timeout covers the ClientHello
    too), and one whose startup never ends inside TLS (10 s)."""
    seen: dict[str, float] = {}
    limit = STARTUP_TIMEOUT + SLACK
    openings = [struct.pack("!I", 200), SSL_REQUEST + b"\x16\x03\x01\x40\x00"]
    threads = [threading.Thread(target=_slowloris, args=(site, o, limit, seen))
               for o in openings]
    threads.append(threading.Thread(target=_slow_startup_in_tls, args=(site, seen)))
    for t in threads:
        t.start()
    # Meanwhile the endpoint still answers others at once.
    assert _plain(site, struct.pack("!II", 5, 0)) == ["08P01"]
    for t in threads:
        t.join(limit + 5)
    assert len(seen) == 4, seen
    assert seen.pop("tls") < HANDSHAKE_TIMEOUT + SLACK
    assert seen.pop("served after") == 3
    for opening, took in seen.items():
        assert took < limit, f"{opening}: still open after {took:.1f} s"


def test_the_daemon_logged_no_traceback(site: Site) -> None:
    # Runs after the probes above (file order).
    with site.daemon.log_path.open("rb") as f:
        f.seek(site.log_start)
        log = f.read().decode(errors="replace")
    # The daemon is shared: only the endpoint's errors, and asyncio's, are this file's.
    found = re.search(r"(ERROR|CRITICAL) (cygnet\.endpoint|asyncio)", log)
    assert found is None, log[found.start():][:6000] if found else ""
    # Still serving: a well-formed but unknown name gets its 3D000.
    with _tls(site, None) as sock:
        sock.sendall(_startup(3 << 16, b"user\0u\0options\0endpoint=nosuch\0\0"))
        assert _check_errors(_read_to_close(sock, PROMPT)) == ["3D000"]
