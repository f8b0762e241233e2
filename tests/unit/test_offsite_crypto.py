"""Client-side encryption of off-host objects: round trips, rotation, tampering."""

from __future__ import annotations

import base64
import os

import pytest

from cygnet.errors import InvalidArgument
from cygnet.offsite.crypto import (
    CHUNK,
    Encryptor,
    Keyring,
    Undecryptable,
    ciphertext_size,
    decrypt,
    decrypt_stream,
    header_size,
)

K1, K2 = os.urandom(32), os.urandom(32)


def ring(current: str, **keys: bytes) -> Keyring:
    return Keyring.from_settings(current, {k: base64.b64encode(v).decode()
                                           for k, v in keys.items()})


def seal(keyring: Keyring, name: str, plain: bytes) -> bytes:
    box = Encryptor(keyring, name, len(plain))
    chunks = [box.chunk(k, plain[k * CHUNK:(k + 1) * CHUNK]) for k in range(box.chunks)]
    return box.header + b"".join(chunks)


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK - 5])
def test_round_trip(size: int) -> None:
    keyring = ring("k1", k1=K1)
    plain = os.urandom(size)
    sealed = seal(keyring, "hosts/h/packs/a.pack", plain)
    assert len(sealed) == ciphertext_size(size, "k1")
    assert decrypt(keyring, "hosts/h/packs/a.pack", sealed) == plain
    # Streamed, as fetches read it, in pieces of odd sizes.
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        part = sealed[pos:pos + min(n, 333_333)]
        pos += len(part)
        return part

    assert b"".join(decrypt_stream(keyring, "hosts/h/packs/a.pack", read)) == plain


def test_rotation_keeps_old_objects_readable_while_their_key_is_kept() -> None:
    old = seal(ring("k1", k1=K1), "o", b"before rotation")
    rotated = ring("k2", k1=K1, k2=K2)
    assert decrypt(rotated, "o", old) == b"before rotation"
    assert decrypt(rotated, "n", seal(rotated, "n", b"after")) == b"after"
    with pytest.raises(Undecryptable, match="'k1'"):
        decrypt(ring("k2", k2=K2), "o", old)


def test_tampering_renaming_and_truncation_are_refused() -> None:
    keyring = ring("k1", k1=K1)
    sealed = seal(keyring, "a", os.urandom(2 * CHUNK + 10))
    flipped = bytearray(sealed)
    flipped[-100] ^= 1
    header = header_size("k1")
    for name, data in [("a", bytes(flipped)), ("b", sealed),
                       ("a", sealed[:header + 2 * (CHUNK + 16)]),  # the last chunk dropped
                       ("a", sealed[:-1])]:
        with pytest.raises(Undecryptable):
            decrypt(keyring, name, data)


def test_bad_keys_name_the_setting_never_the_value() -> None:
    secret = base64.b64encode(os.urandom(16)).decode()
    with pytest.raises(InvalidArgument, match=r"^offsite_keys: key 'k1' is not 32 bytes") as e:
        Keyring.from_settings("k1", {"k1": secret})
    assert secret not in str(e.value)
    with pytest.raises(InvalidArgument, match=r"^offsite_keys"):
        Keyring.from_settings("k1", {"k1": "not base64!"})
    with pytest.raises(InvalidArgument, match=r"^offsite_key_id"):
        Keyring.from_settings("k9", {"k1": base64.b64encode(K1).decode()})
    assert "k1" in repr(ring("k1", k1=K1)) and repr(K1) not in repr(ring("k1", k1=K1))
