"""Block-level primitives: 8 KiB page hashing, digest diffing, dedup index.

The hot paths are C (cygnet._native); this package is the Python face of
them. A digest array is the concatenation of 16-byte XXH3-128 digests in
canonical big-endian order (equal to ``xxhash.xxh3_128_digest(block)``), one
per 8 KiB block of a file; a final partial block is hashed as its actual
bytes, and an empty file has no digests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from cygnet._native import BLOCK_SIZE, DIGEST_SIZE, DedupIndex, diff_digests, hash_bytes, hash_file

__all__ = [
    "BLOCK_SIZE",
    "DIGEST_SIZE",
    "RECORD_SIZE",
    "BlockLocation",
    "DedupIndex",
    "diff_digests",
    "hash_bytes",
    "hash_file",
    "iter_digests",
    "iter_records",
]

# Size of one DedupIndex record (DedupIndex.to_bytes / update).
RECORD_SIZE = 40


class BlockLocation(NamedTuple):
    """Where a stored block lives: a compressed frame inside a pack file, and
    the block's place among the whole blocks that frame holds (0 if only one)."""

    pack_id: int
    offset: int
    length: int
    slot: int = 0


def iter_digests(digests: bytes) -> Iterator[bytes]:
    """The 16-byte digests of a digest array, in block order."""
    for off in range(0, len(digests), DIGEST_SIZE):
        yield digests[off : off + DIGEST_SIZE]


def iter_records(records: bytes) -> Iterator[tuple[bytes, BlockLocation]]:
    """Decodes DedupIndex records into (digest, location) pairs."""
    for off in range(0, len(records), RECORD_SIZE):
        rec = records[off : off + RECORD_SIZE]
        yield (
            rec[:16],
            BlockLocation(
                int.from_bytes(rec[16:24], "little"),
                int.from_bytes(rec[24:32], "little"),
                int.from_bytes(rec[32:36], "little"),
                int.from_bytes(rec[36:40], "little"),
            ),
        )
