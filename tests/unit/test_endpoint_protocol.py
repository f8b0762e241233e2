"""The endpoint's wire pieces: startup parsing, errors, options, SNI and endpoint names."""

from __future__ import annotations

import ssl
import struct

import pytest

from cygnet.endpoint import protocol as P
from cygnet.endpoint.names import (
    Candidate,
    candidates,
    endpoint_name,
    endpoint_uri,
    name_in_host,
)
from cygnet.endpoint.sni import NotTls, parse_hello


def _hello(server_name: str | None) -> bytes:
    """A real ClientHello, as Python's OpenSSL writes it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_sni_is_read_from_a_real_client_hello() -> None:
    data = _hello("shop--feature.pg.example.com")
    hello = parse_hello(data)
    assert hello is not None and hello.server_name == "shop--feature.pg.example.com"
    assert hello.size == len(data)
    assert parse_hello(_hello(None)) == type(hello)("", len(_hello(None)))


def test_a_partial_hello_asks_for_more_and_garbage_is_refused() -> None:
    data = _hello("a.example")
    for cut in (0, 3, 5, len(data) // 2, len(data) - 1):
        assert parse_hello(data[:cut]) is None
    with pytest.raises(NotTls):
        parse_hello(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(NotTls):
        parse_hello(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00")  # a ServerHello
    body = b"\x01\x00\x00\x03" + b"\x03\x03\x00"  # a complete ClientHello of 3 bytes
    with pytest.raises(NotTls):
        parse_hello(b"\x16\x03\x01" + struct.pack("!H", len(body)) + body)


def test_startup_messages_round_trip_and_bad_ones_are_refused() -> None:
    startup = P.Startup(P.PROTOCOL_3, {"user": "postgres", "database": "db", "options": "-c x=1"})
    data = startup.encode()
    length, code = P.request_header(data[:8])
    assert length == len(data) and code == P.PROTOCOL_3
    assert P.parse_startup(code, data[8:]) == startup
    with pytest.raises(P.ProtocolError):
        P.parse_startup(2 << 16, data[8:])
    with pytest.raises(P.ProtocolError):
        P.parse_startup(code, b"user\0postgres\0")  # no final NUL
    with pytest.raises(P.ProtocolError):
        P.parse_startup(code, b"user\0\0")  # a name without a value
    with pytest.raises(P.ProtocolError):
        P.request_header(struct.pack("!II", 100_000, P.PROTOCOL_3))


def test_error_responses_carry_severity_sqlstate_message_and_hint() -> None:
    data = P.error_response("3D000", 'endpoint "x" does not exist', hint="try y")
    assert data[:1] == b"E" and struct.unpack("!I", data[1:5])[0] == len(data) - 1
    fields = dict((f[:1], f[1:]) for f in data[5:].split(b"\0") if f)
    assert fields == {b"S": b"FATAL", b"V": b"FATAL", b"C": b"3D000",
                      b"M": b'endpoint "x" does not exist', b"H": b"try y"}


@pytest.mark.parametrize(("options", "found", "rest"), [
    ("endpoint=shop", "shop", ""),
    ("-c endpoint=shop--dev -c search_path=a", "shop--dev", "-c search_path=a"),
    ("-cendpoint=shop", "shop", ""),
    ("--search_path=x endpoint=db/branch", "db/branch", "--search_path=x"),
    ("-c application_name=a\\ b", "", "-c application_name=a\\ b"),
    ("", "", ""),
])
def test_the_endpoint_is_taken_out_of_options(options: str, found: str, rest: str) -> None:
    assert P.split_options(options) == (found, rest)


def test_names_read_every_way_they_can() -> None:
    assert candidates("shop") == [Candidate("shop", "")]
    assert candidates("shop--dev") == [Candidate("shop--dev", ""), Candidate("shop", "dev")]
    assert candidates("a--b--c") == [Candidate("a--b--c", ""), Candidate("a", "b--c"),
                                     Candidate("a--b", "c")]
    assert candidates("shop/dev") == [Candidate("shop", "dev")]
    assert candidates("brabcdefghij") == [Candidate("", "brabcdefghij")]
    assert candidates("dbabcdefghij") == [Candidate("dbabcdefghij", "")]
    assert candidates("--x") == [Candidate("--x", "")]


def test_only_names_under_the_domain_are_endpoints() -> None:
    assert name_in_host("shop--dev.pg.example.com", "pg.example.com") == "shop--dev"
    assert name_in_host("Shop.PG.example.com.", "pg.example.com") == "Shop"
    assert name_in_host("a.b.pg.example.com", "pg.example.com") is None
    assert name_in_host("pg.example.com", "pg.example.com") is None
    assert name_in_host("localhost", "pg.example.com") is None
    assert name_in_host("shop.pg.example.com", "") is None
    assert name_in_host("", "pg.example.com") is None


def test_printed_names_fit_a_dns_label_or_fall_back_to_the_id() -> None:
    assert endpoint_name("shop", "main", "br0000000001", True) == "shop"
    assert endpoint_name("shop", "dev", "br0000000001", False) == "shop--dev"
    assert endpoint_name("shop", "my branch", "br0000000001", False) == "br0000000001"
    assert endpoint_name("a--b", "c", "br0000000001", False) == "br0000000001"
    assert endpoint_name("shop", "x" * 70, "br0000000001", False) == "br0000000001"


def test_endpoint_uris_with_and_without_a_domain() -> None:
    tls = {"sslmode": "verify-full", "sslrootcert": "/var/lib/cygnet/ca.pem"}
    assert endpoint_uri("10.0.0.5", 5432, "pg.example.com", "shop--dev", "postgres", "p@ss",
                        "postgres", tls) == (
        "postgresql://postgres:p%40ss@shop--dev.pg.example.com:5432/postgres"
        "?sslmode=verify-full&sslrootcert=/var/lib/cygnet/ca.pem")
    assert endpoint_uri("::1", 6432, "", "shop", "postgres", "pw", "postgres",
                        {"sslmode": "require"}) == (
        "postgresql://postgres:pw@[::1]:6432/postgres?options=endpoint%3Dshop&sslmode=require")
