"""The few Postgres wire messages the endpoint reads or writes before it relays."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Request codes of the untyped first message (protocol.h in PostgreSQL).
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 3 << 16

# The largest startup packet Postgres accepts (MAX_STARTUP_PACKET_LENGTH).
MAX_STARTUP = 10000

SSL_REQUEST_BYTES = struct.pack("!II", 8, SSL_REQUEST)

# SQLSTATEs the endpoint itself answers with.
INVALID_CATALOG_NAME = "3D000"  # no such endpoint (Postgres says it for a missing database)
INVALID_AUTHORIZATION = "28000"  # plain TCP: the endpoint takes TLS only
REJECTED_CONNECTION = "08004"  # no endpoint named, or a name in no known form
CANNOT_CONNECT_NOW = "57P03"  # the branch cannot start or be reached
PROTOCOL_VIOLATION = "08P01"
TOO_MANY_CONNECTIONS = "53300"


class Unroutable(Exception):
    """The client gets a Postgres error with this SQLSTATE, message and hint."""

    def __init__(self, sqlstate: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.sqlstate, self.message, self.hint = sqlstate, message, hint


class ProtocolError(Exception):
    """A client that does not speak the startup protocol."""


@dataclass
class Startup:
    """A StartupMessage: protocol version and its parameters (user, database, options...)."""

    version: int
    params: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in self.params.items())
        body += b"\0"
        return struct.pack("!II", 8 + len(body), self.version) + body


def request_header(data: bytes) -> tuple[int, int]:
    """(length, code) of the first 8 bytes of an untyped message."""
    length, code = struct.unpack("!II", data)
    if not 8 <= length <= MAX_STARTUP:
        raise ProtocolError(f"invalid startup packet length {length}")
    return length, code


def parse_startup(code: int, rest: bytes) -> Startup:
    """The parameters after the version code; raises ProtocolError for malformed ones."""
    if code >> 16 != 3:
        raise ProtocolError(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    parts = rest.split(b"\0")
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
        raise ProtocolError("startup packet is not NUL-terminated")
    items = parts[:-2]
    if len(items) % 2:
        raise ProtocolError("startup packet has a parameter without a value")
    try:
        texts = [p.decode() for p in items]
    except UnicodeDecodeError:
        raise ProtocolError("startup packet is not valid UTF-8") from None
    return Startup(code, dict(zip(texts[::2], texts[1::2], strict=True)))


def error_response(sqlstate: str, message: str, detail: str = "", hint: str = "") -> bytes:
    """A FATAL ErrorResponse ('E'), as Postgres itself would send it."""
    fields = [(b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message)]
    if detail:
        fields.append((b"D", detail))
    if hint:
        fields.append((b"H", hint))
    body = b"".join(k + v.encode() + b"\0" for k, v in fields) + b"\0"
    return b"E" + struct.pack("!I", 4 + len(body)) + body


def split_options(options: str) -> tuple[str, str]:
    """(endpoint, the other options) of a startup `options` value.

    Accepts `endpoint=NAME` and `-c endpoint=NAME` (Neon's form), with spaces
    between options as libpq passes them; a backslash escapes a space.
    """
    words = _words(options)
    found, kept, i = "", [], 0
    while i < len(words):
        word = words[i]
        if word in ("-c", "--c") and i + 1 < len(words) and words[i + 1].startswith("endpoint="):
            found = words[i + 1].split("=", 1)[1]
            i += 2
            continue
        if word.startswith("endpoint=") or word.startswith("-cendpoint="):
            found = word.split("=", 1)[1]
        else:
            kept.append(word.replace("\\", "\\\\").replace(" ", "\\ "))
        i += 1
    return found, " ".join(kept)


def _words(options: str) -> list[str]:
    """Postgres' pg_split_opts: whitespace separates, a backslash escapes the next character."""
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in options:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words
