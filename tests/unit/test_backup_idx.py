"""The pack index format: version 2 round-trips, version 1 is still read,
and damage of either kind is refused."""

from __future__ import annotations

import os
import struct

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from cygnet.backup.errors import CorruptRepository
from cygnet.backup.packs import IDX_MAGIC, IDX_MAGIC_V1, decode_idx, encode_idx
from cygnet.blocks import RECORD_SIZE


def records(count: int, pack_id: int = 7) -> bytes:
    out = bytearray()
    for i in range(count):
        out += os.urandom(16) + struct.pack("<QQII", pack_id, 8 + i // 32 * 9000, 9000, i % 32)
    return bytes(out)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=RECORD_SIZE * 40).map(
    lambda b: b[:len(b) - len(b) % RECORD_SIZE]))
def test_any_records_round_trip(recs: bytes) -> None:
    data = b"".join(encode_idx(recs))
    assert data.startswith(IDX_MAGIC)
    assert decode_idx(data, "x.idx") == recs


def test_version_2_is_about_16_bytes_a_block() -> None:
    recs = records(20_000)
    size = len(b"".join(encode_idx(recs)))
    assert size < 17 * 20_000, size  # 40 a block in version 1


def test_version_1_is_still_read() -> None:
    recs = records(100)
    header = IDX_MAGIC_V1 + (100).to_bytes(8, "little")
    data = header + recs + xxhash.xxh3_128_digest(header + recs)
    assert decode_idx(data, "old.idx") == recs


@pytest.mark.parametrize("damage", ["flip", "truncate", "count"])
def test_damage_is_refused(damage: str) -> None:
    data = bytearray(b"".join(encode_idx(records(200))))
    if damage == "flip":
        data[40] ^= 1
    elif damage == "truncate":
        del data[-40:-16]
    else:  # a count that does not match, under a valid checksum
        header = IDX_MAGIC + (201).to_bytes(8, "little")
        body = bytes(data[16:-16])
        data = bytearray(header + body + xxhash.xxh3_128_digest(header + body))
    with pytest.raises(CorruptRepository, match=r"x\.idx"):
        decode_idx(bytes(data), "x.idx")
