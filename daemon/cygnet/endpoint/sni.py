"""The server name (SNI) of a TLS ClientHello, read without taking part in TLS.

The endpoint peeks at the client's first TLS flight, finds the name and
leaves the bytes in the socket for the branch's own Postgres to answer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# A ClientHello is far smaller; more is not a client we want to wait for.
MAX_HELLO = 64 * 1024

_HANDSHAKE = 0x16
_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0
_HOST_NAME = 0


class NotTls(Exception):
    """The bytes are not a TLS ClientHello."""


@dataclass(frozen=True)
class Hello:
    server_name: str  # "" when the client sent none (an IP address, sslsni=0)
    size: int  # bytes of the records that carry it


def _handshake_bytes(data: bytes) -> tuple[bytes, int] | None:
    """The handshake message gathered from its records, or None until all arrived."""
    message = b""
    pos = 0
    while True:
        if len(data) < pos + 5:
            return None
        kind, _version, length = struct.unpack_from("!BHH", data, pos)
        if kind != _HANDSHAKE or length == 0 or length > 16384 + 2048:
            raise NotTls("not a TLS handshake record")
        if len(data) < pos + 5 + length:
            return None
        message += data[pos + 5:pos + 5 + length]
        pos += 5 + length
        if len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                raise NotTls("not a ClientHello")
            total = 4 + int.from_bytes(message[1:4], "big")
            if total > MAX_HELLO:
                raise NotTls("ClientHello too large")
            if len(message) >= total:
                return message[4:total], pos


def parse_hello(data: bytes) -> Hello | None:
    """The ClientHello at the start of `data`, or None if more bytes are needed."""
    if len(data) > MAX_HELLO:
        raise NotTls("ClientHello too large")
    found = _handshake_bytes(data)
    if found is None:
        return None
    body, size = found
    try:
        return Hello(_server_name(body), size)
    except (struct.error, IndexError, UnicodeDecodeError):
        raise NotTls("malformed ClientHello") from None


def _server_name(body: bytes) -> str:
    pos = 2 + 32  # client_version, random
    pos += 1 + body[pos]  # session id
    pos += 2 + struct.unpack_from("!H", body, pos)[0]  # cipher suites
    pos += 1 + body[pos]  # compression methods
    if pos >= len(body):
        return ""  # no extensions
    end = pos + 2 + struct.unpack_from("!H", body, pos)[0]
    pos += 2
    while pos + 4 <= end:
        ext, length = struct.unpack_from("!HH", body, pos)
        pos += 4
        if ext == _EXT_SERVER_NAME:
            return _host_name(body[pos:pos + length])
        pos += length
    return ""


def _host_name(ext: bytes) -> str:
    pos, end = 2, 2 + struct.unpack_from("!H", ext, 0)[0]
    while pos + 3 <= end:
        kind, length = struct.unpack_from("!BH", ext, pos)
        pos += 3
        if kind == _HOST_NAME:
            return ext[pos:pos + length].decode("ascii")
        pos += length
    return ""
