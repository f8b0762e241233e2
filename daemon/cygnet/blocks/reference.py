"""Pure-Python reference of the native block functions, used by the tests.

Slow on purpose (one xxhash call per 8 KiB block); the C versions in
cygnet._native must give byte-identical results.
"""

from __future__ import annotations

import os

import xxhash

BLOCK_SIZE = 8192
DIGEST_SIZE = 16


def hash_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """Concatenated XXH3-128 digests of every 8 KiB block (last one partial)."""
    view = memoryview(data)
    return b"".join(
        xxhash.xxh3_128_digest(view[off : off + BLOCK_SIZE])
        for off in range(0, len(view), BLOCK_SIZE)
    )


def hash_file(path: str | os.PathLike[str]) -> bytes:
    """Digests of every 8 KiB block of a file, read one block at a time."""
    out = []
    with open(path, "rb") as f:
        while block := f.read(BLOCK_SIZE):
            out.append(xxhash.xxh3_128_digest(block))
    return b"".join(out)


def diff_digests(a: bytes, b: bytes) -> list[int]:
    """Indexes of blocks whose digests differ; a block on one side only differs."""
    if len(a) % DIGEST_SIZE or len(b) % DIGEST_SIZE:
        raise ValueError("digest arrays must be multiples of 16 bytes")
    na, nb = len(a) // DIGEST_SIZE, len(b) // DIGEST_SIZE
    changed = [
        i
        for i in range(min(na, nb))
        if a[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] != b[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]
    ]
    changed.extend(range(min(na, nb), max(na, nb)))
    return changed
