"""Delta encoding of a backup's digest arrays against a base backup's.

Pure functions, no I/O: manifest.py stores what encode() returns and hands
decode() the base it read. Each file of the new backup gets one op:

    "F"         full: its digest array is in the payload
    ["S", k]    same digests as base file #k (any path: catches renamed files,
                e.g. WAL segments PostgreSQL recycles under new names)
    ["P", n]    patch of the base file with the same path: n ascending block
                indexes (in `indices`) and their n digests (in the payload);
                blocks past the base file's end are always in the patch,
                blocks past the new length (from the entry size) dropped

Ops, indexes and payload are each consumed in file order. A patch's indexes
are stored as uint32 little-endian gaps (the first index, then each minus
the one before): mostly small numbers, which the zstd frame manifest.py puts
them in shrinks to about a third when 1% of blocks changed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any

import xxhash

from cygnet.blocks import DIGEST_SIZE, diff_digests

# One file of a backup: (path, digest array); a new file as decode() knows
# it before its digests: (path, number of blocks).
FileDigests = tuple[str, bytes]
FileShape = tuple[str, int]

INDEX_SIZE = 4
MAX_PATCH_BLOCKS = 1 << 32  # indexes are uint32; longer files are stored in full
PATCH_RECORD = INDEX_SIZE + DIGEST_SIZE


@dataclass(frozen=True)
class Delta:
    ops: list[Any]  # JSON-ready, one per file
    indices: bytes  # block indexes of all patches, as uint32 little-endian gaps
    payload: bytes  # digests of full files and of patches


def encode(files: Sequence[FileDigests], base: Sequence[FileDigests]) -> Delta:
    """The cheapest op for each file of `files` given the base's files."""
    by_hash: dict[bytes, int] = {}
    for k, (_, old) in enumerate(base):
        by_hash.setdefault(xxhash.xxh3_128_digest(old), k)
    by_path = _paths(base)
    ops: list[Any] = []
    indices: list[bytes] = []
    payload: list[bytes] = []
    for path, digests in files:
        if not digests:  # empty: a full op costs nothing and needs no base
            ops.append("F")
            continue
        same = by_hash.get(xxhash.xxh3_128_digest(digests))
        if same is not None and base[same][1] == digests:
            ops.append(["S", same])
            continue
        same_path = by_path.get(path)
        changed = None if same_path is None else _patch(base[same_path][1], digests)
        if changed is None:
            ops.append("F")
            payload.append(digests)
            continue
        ops.append(["P", len(changed)])
        gaps = [b - a for a, b in pairwise([0, *changed])]
        indices.append(struct.pack(f"<{len(gaps)}I", *gaps))
        payload.extend(digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] for i in changed)
    return Delta(ops, b"".join(indices), b"".join(payload))


def _paths(base: Sequence[FileDigests]) -> dict[str, int]:
    return {path: k for k, (path, _) in enumerate(base)}


def _patch(old: bytes, new: bytes) -> list[int] | None:
    """Indexes of the blocks of `new` that differ from `old`, or None if a
    patch would cost as much as the full array."""
    nblocks = len(new) // DIGEST_SIZE
    if nblocks > MAX_PATCH_BLOCKS:
        return None
    changed = diff_digests(old, new)
    if len(old) > len(new):  # blocks past the new end: dropped by truncation
        changed = [i for i in changed if i < nblocks]
    if len(changed) * PATCH_RECORD >= len(new):
        return None
    return changed


def decode(files: Sequence[FileShape], delta: Delta, base: Sequence[FileDigests]) -> bytes:
    """The concatenated digest arrays of `files`; ValueError if the delta does
    not fit them or the base."""
    if len(delta.ops) != len(files):
        raise ValueError(f"{len(delta.ops)} file ops for {len(files)} files")
    reader = _Reader(delta)
    by_path = _paths(base)
    out: list[bytes] = []
    for (path, nblocks), op in zip(files, delta.ops, strict=True):
        if op == "F":
            out.append(reader.digests(nblocks))
        elif isinstance(op, list) and len(op) == 2 and op[0] == "S":
            out.append(_same(base, op[1], nblocks))
        elif isinstance(op, list) and len(op) == 2 and op[0] == "P":
            k = by_path.get(path)
            if k is None:
                raise ValueError(f"{path}: patch of a file the base lacks")
            out.append(_apply(base[k][1], nblocks, op[1], reader, path))
        else:
            raise ValueError(f"{path}: unknown op {op!r}")
    reader.finish()
    return b"".join(out)


def _same(base: Sequence[FileDigests], k: Any, nblocks: int) -> bytes:
    if not isinstance(k, int) or not 0 <= k < len(base):
        raise ValueError(f"no base file #{k!r}")
    if len(base[k][1]) != nblocks * DIGEST_SIZE:
        raise ValueError(f"base file #{k} has another length")
    return base[k][1]


def _apply(old: bytes, nblocks: int, count: Any, reader: _Reader, path: str) -> bytes:
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"{path}: bad patch length {count!r}")
    indexes = reader.indexes(count)
    digests = reader.digests(count)
    old_blocks = len(old) // DIGEST_SIZE
    # Ascending and in range, and covering every block past the base's end
    # (those have no digest to inherit).
    if any(b <= a for a, b in pairwise(indexes)) or (indexes and indexes[-1] >= nblocks):
        raise ValueError(f"{path}: patch indexes out of order or range")
    if sum(i >= old_blocks for i in indexes) != max(0, nblocks - old_blocks):
        raise ValueError(f"{path}: patch leaves blocks without a digest")
    out = bytearray(old[: nblocks * DIGEST_SIZE])
    out.extend(bytes(nblocks * DIGEST_SIZE - len(out)))
    for j, i in enumerate(indexes):
        at = j * DIGEST_SIZE
        out[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] = digests[at : at + DIGEST_SIZE]
    return bytes(out)


class _Reader:
    """Consumes the index and payload streams, refusing to run past their ends."""

    def __init__(self, delta: Delta) -> None:
        self._delta = delta
        self._ipos = self._ppos = 0

    def digests(self, count: int) -> bytes:
        end = self._ppos + count * DIGEST_SIZE
        if end > len(self._delta.payload):
            raise ValueError("payload ends early")
        data = self._delta.payload[self._ppos : end]
        self._ppos = end
        return data

    def indexes(self, count: int) -> list[int]:
        end = self._ipos + count * INDEX_SIZE
        if end > len(self._delta.indices):
            raise ValueError("patch indexes end early")
        gaps = struct.unpack_from(f"<{count}I", self._delta.indices, self._ipos)
        self._ipos = end
        return list(accumulate(gaps))

    def finish(self) -> None:
        if self._ipos != len(self._delta.indices) or self._ppos != len(self._delta.payload):
            raise ValueError("trailing patch data")
