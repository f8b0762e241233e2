"""The C block functions against the pure-Python reference, on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cygnet import blocks
from cygnet.blocks import reference

BS = blocks.BLOCK_SIZE

# Sizes around block and read-chunk (4 MiB) boundaries, where off-by-ones live.
EDGE_SIZES = [0, 1, BS - 1, BS, BS + 1, 3 * BS + 17, (4 << 20) - 1, 4 << 20, (4 << 20) + BS + 5]


@pytest.mark.parametrize("size", EDGE_SIZES)
def test_hash_file_edge_sizes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = reference.hash_file(path)
    assert blocks.hash_file(path) == expected
    assert blocks.hash_file(str(path).encode()) == expected
    assert blocks.hash_bytes(data) == expected
    assert len(expected) == 16 * -(-size // BS)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=5 * BS + 100))
def test_hash_matches_reference(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    assert blocks.hash_file(path) == reference.hash_file(path) == reference.hash_bytes(data)
    assert blocks.hash_bytes(data) == reference.hash_bytes(data)
    assert blocks.hash_bytes(bytearray(data)) == blocks.hash_bytes(memoryview(data))


def test_digest_is_canonical_xxh3_128() -> None:
    block = b"cygnet" * 1365
    assert blocks.hash_bytes(block) == xxhash.xxh3_128_digest(block)
    assert blocks.hash_bytes(block) == xxhash.xxh3_128(block).digest()


def test_hash_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as exc:
        blocks.hash_file(tmp_path / "missing")
    assert exc.value.filename == tmp_path / "missing"
    with pytest.raises(IsADirectoryError):
        blocks.hash_file(tmp_path)
    with pytest.raises(TypeError):
        blocks.hash_file(42)  # type: ignore[arg-type]


digest_arrays = st.lists(st.sampled_from([bytes([i]) * 16 for i in range(4)]), max_size=40).map(
    b"".join
)


@given(a=digest_arrays, b=digest_arrays)
def test_diff_digests_matches_reference(a: bytes, b: bytes) -> None:
    assert blocks.diff_digests(a, b) == reference.diff_digests(a, b)
    assert blocks.diff_digests(a, b) == blocks.diff_digests(b, a)
    assert blocks.diff_digests(a, a) == []


def test_diff_digests_rejects_ragged_arrays() -> None:
    with pytest.raises(ValueError):
        blocks.diff_digests(b"x" * 17, b"")
    with pytest.raises(ValueError):
        blocks.diff_digests(b"", b"x" * 15)


def test_diff_of_modified_file(tmp_path: Path) -> None:
    data = bytearray(os.urandom(20 * BS + 5))
    before = blocks.hash_bytes(data)
    data[3 * BS + 1] ^= 1
    data[19 * BS] ^= 1
    data += b"tail"
    assert blocks.diff_digests(before, blocks.hash_bytes(data)) == [3, 19, 20]


@pytest.mark.parametrize("size", [32 << 20, (40 << 20) + 123, (64 << 20) + BS])
def test_large_files_hashed_in_ranges_match_reference(tmp_path: Path, size: int) -> None:
    """Files of 32 MiB and more are split among threads: same digests, same order."""
    path = tmp_path / "big"
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    assert blocks.hash_file(path) == reference.hash_file(path)
