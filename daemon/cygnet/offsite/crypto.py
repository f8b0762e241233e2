"""Client-side encryption of off-host objects: AES-256-GCM in fixed-size chunks.

An object is HEADER then chunks. Each CHUNK bytes of plaintext (the last may be
shorter, even empty) becomes its ciphertext plus a 16-byte tag, so an object's
parts can be encrypted in parallel and its first chunk decrypted alone (a
listing reads a manifest's header from it). Each chunk's nonce is the object's
random 8-byte prefix and the chunk number; its associated data binds the
object's name, the chunk number and whether it is the last, so a chunk moved,
an object renamed or truncated fails to decrypt rather than restoring the
wrong bytes.

    HEADER = MAGIC (8) | key id length (1) | key id | nonce prefix (8)
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cygnet.errors import InvalidArgument

MAGIC = b"CYGENC01"
CHUNK = 1 << 20
TAG = 16
KEY_BYTES = 32
_AAD = struct.Struct("<IB")


class Undecryptable(Exception):
    """An object fails authentication: damaged, truncated, or under another name or key."""


@dataclass(frozen=True)
class Keyring:
    """Encryption keys by id; new objects are written with `current`."""

    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    @classmethod
    def from_settings(cls, current: str, encoded: Mapping[str, str]) -> Keyring:
        """Keys as the settings hold them: id -> 32 random bytes in base64."""
        keys: dict[str, bytes] = {}
        for key_id, text in encoded.items():
            if not key_id or len(key_id.encode()) > 64 or not key_id.isascii():
                raise InvalidArgument("offsite_keys", f"key id {key_id!r} is not 1-64 ASCII chars")
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != KEY_BYTES:
                # Never the value itself: it is a secret.
                raise InvalidArgument("offsite_keys", f"key {key_id!r} is not {KEY_BYTES} bytes "
                                      "in base64 (make one: head -c 32 /dev/urandom | base64)")
            keys[key_id] = raw
        if current not in keys:
            raise InvalidArgument("offsite_key_id", f"{current!r} is not one of offsite_keys"
                                  if current else "is empty: name the key new objects use")
        return cls(current, keys)


def ciphertext_size(plain: int, key_id: str) -> int:
    chunks = max(1, -(-plain // CHUNK))
    return header_size(key_id) + plain + chunks * TAG


def header_size(key_id: str) -> int:
    return len(MAGIC) + 1 + len(key_id.encode()) + 8


class Encryptor:
    """Encrypts one object's chunks; any chunk, in any order, from any thread."""

    def __init__(self, keyring: Keyring, name: str, plain_size: int) -> None:
        self.key_id = keyring.current
        self._aead = AESGCM(keyring.keys[self.key_id])
        self._prefix = os.urandom(8)
        self._name = name.encode()
        self.chunks = max(1, -(-plain_size // CHUNK))
        self.header = MAGIC + bytes([len(self.key_id)]) + self.key_id.encode() + self._prefix

    def chunk(self, number: int, plain: bytes) -> bytes:
        last = number == self.chunks - 1
        return self._aead.encrypt(self._prefix + number.to_bytes(4, "big"), plain,
                                  self._name + _AAD.pack(number, last))


@dataclass(frozen=True)
class Decryptor:
    aead: AESGCM
    prefix: bytes
    name: bytes
    header_len: int

    @classmethod
    def open(cls, keyring: Keyring, name: str, head: bytes) -> Decryptor:
        """From the object's first bytes (at least its header)."""
        if head[:8] != MAGIC or len(head) < 9:
            raise Undecryptable(f"{name}: not a Cygnet encrypted object")
        n = head[8]
        key_id = head[9:9 + n].decode(errors="replace")
        prefix = head[9 + n:17 + n]
        if len(prefix) != 8:
            raise Undecryptable(f"{name}: truncated header")
        if key_id not in keyring.keys:
            raise Undecryptable(f"{name}: encrypted with key {key_id!r}, which offsite_keys lacks")
        return cls(AESGCM(keyring.keys[key_id]), prefix, name.encode(), 17 + n)

    def chunk(self, number: int, sealed: bytes, last: bool) -> bytes:
        try:
            return self.aead.decrypt(self.prefix + number.to_bytes(4, "big"), sealed,
                                     self.name + _AAD.pack(number, last))
        except InvalidTag:
            raise Undecryptable(f"{self.name.decode()}: chunk {number} fails authentication "
                                "(damaged, truncated or replaced)") from None

    def chunks(self, body: bytes) -> Iterator[bytes]:
        """Plaintext of a whole object's body (all of it after the header)."""
        step = CHUNK + TAG
        count = max(1, -(-len(body) // step))
        for k in range(count):
            yield self.chunk(k, body[k * step:(k + 1) * step], k == count - 1)


def decrypt(keyring: Keyring, name: str, data: bytes) -> bytes:
    box = Decryptor.open(keyring, name, data[:100])
    return b"".join(box.chunks(data[box.header_len:]))


def decrypt_stream(keyring: Keyring, name: str, read: Callable[[int], bytes]) -> Iterator[bytes]:
    """Plaintext of an object read piecewise (read(n) returns up to n bytes, b"" at the
    end), a chunk at a time: memory stays at two chunks whatever the object's size."""
    head = _read_exact(read, 9)
    head += _read_exact(read, head[8] + 8) if len(head) == 9 else b""
    box = Decryptor.open(keyring, name, head)
    step = CHUNK + TAG
    current, number = _read_exact(read, step), 0
    while True:
        following = _read_exact(read, step) if len(current) == step else b""
        yield box.chunk(number, current, not following)
        if not following:
            return
        current, number = following, number + 1


def _read_exact(read: Callable[[int], bytes], size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        part = read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)
