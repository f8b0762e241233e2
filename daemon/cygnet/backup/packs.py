"""Pack files: each distinct block stored once, in a zstd frame.

A pack is PACK_MAGIC followed by frames. A frame holds one block, or a group
of up to MAX_GROUP whole blocks compressed together: neighbouring pages
compress far better together (pgbench heap: 44:1 against 19:1 alone) and
zstd runs twice as fast on 256 KiB as on 8 KiB calls. Its .idx holds
IDX_MAGIC, a record count, the DedupIndex records (digest, pack id, frame
offset, frame length, slot of the block in its frame) and an XXH3-128 of
all that. Version 2 stores the records as one zstd frame, byte column by byte
column (byte 0 of every record, then byte 1, ...): the 24 bytes after each
digest are nearly the same from block to block and shrink to almost nothing,
so an .idx costs about 16 bytes per block instead of 40 (7 MB less for a
2.4 GB database, beside its ~100 MB of packs). Version 1 is still read.

The pack is fsynced before its .idx is renamed into place, so an .idx always
describes durable data; a pack without an .idx is an interrupted write and is
garbage.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Callable, Sequence

import xxhash
import zstandard

from cygnet.backup.errors import CorruptRepository
from cygnet.backup.fsutil import atomic_write
from cygnet.backup.repo import Repository
from cygnet.blocks import BLOCK_SIZE, RECORD_SIZE, BlockLocation, DedupIndex, hash_bytes

PACK_MAGIC = b"CYGPACK1"
IDX_MAGIC = b"CYGIDX02"
IDX_MAGIC_V1 = b"CYGIDX01"
_IDX_LEVEL = 3
DEFAULT_PACK_SIZE = 32 << 20
# zstd picks its parameters by input size: for frames of at most 256 KiB (ours),
# level 2 stores pgbench pages 20% smaller than level 1 (16.7 against 20.9 MB of
# 366 MB) at about 1.8x the CPU, still ~470 MB/s a core; level 3 gains nothing more.
DEFAULT_LEVEL = 2
MAX_GROUP = 32  # blocks per frame written: 256 KiB; restoring one block decompresses ~0.1 ms
MAX_FRAME_BLOCKS = 512  # largest frame a reader accepts (a zip-bomb guard, not a format limit)
_SHARED = struct.Struct("<QQI")  # pack id, frame offset, frame length: a record after its digest
_SLOTS = [slot.to_bytes(4, "little") for slot in range(MAX_FRAME_BLOCKS)]


def encode_idx(records: bytes) -> list[bytes]:
    header = IDX_MAGIC + (len(records) // RECORD_SIZE).to_bytes(8, "little")
    body = zstandard.ZstdCompressor(level=_IDX_LEVEL).compress(_columns(records))
    return [header, body, xxhash.xxh3_128_digest(header + body)]


def decode_idx(data: bytes, name: str) -> bytes:
    """The records of an .idx file; CorruptRepository if it fails its checksum."""
    body, checksum = data[:-16], data[-16:]
    if len(data) < 32 or body[:8] not in (IDX_MAGIC, IDX_MAGIC_V1) or \
            xxhash.xxh3_128_digest(body) != checksum:
        raise CorruptRepository(f"{name}: pack index fails its checksum")
    count = int.from_bytes(body[8:16], "little")
    records = body[16:]
    if body[:8] == IDX_MAGIC:
        try:
            columns = zstandard.ZstdDecompressor().decompress(
                records, max_output_size=count * RECORD_SIZE)
        except zstandard.ZstdError:
            raise CorruptRepository(f"{name}: pack index does not decompress") from None
        if len(columns) != count * RECORD_SIZE:
            raise CorruptRepository(f"{name}: pack index record count mismatch")
        return _rows(columns)
    if len(records) != count * RECORD_SIZE:
        raise CorruptRepository(f"{name}: pack index record count mismatch")
    return records


def _columns(records: bytes) -> bytes:
    """Records as columns: byte j of every record, for j in 0..RECORD_SIZE-1."""
    return b"".join(records[j::RECORD_SIZE] for j in range(RECORD_SIZE))


def _rows(columns: bytes) -> bytes:
    """The inverse of _columns."""
    count = len(columns) // RECORD_SIZE
    rows = bytearray(len(columns))
    for j in range(RECORD_SIZE):
        rows[j::RECORD_SIZE] = columns[j * count:(j + 1) * count]
    return bytes(rows)


def read_idx(repo: Repository, pack_id: int) -> bytes:
    path = repo.idx_path(pack_id)
    return decode_idx(path.read_bytes(), path.name)


def load_index(repo: Repository) -> tuple[DedupIndex, list[str]]:
    """Index of every committed pack, and the problems of unreadable .idx files
    (their blocks are left out, so a new backup stores them again)."""
    index = DedupIndex()
    problems = []
    for pack_id in repo.pack_ids():
        try:
            index.update(read_idx(repo, pack_id))
        except (CorruptRepository, OSError) as e:
            problems.append(str(e))
    return index, problems


class PackWriter:
    """Appends frames to packs of about pack_size bytes, committing each when full."""

    def __init__(
        self, repo: Repository, pack_size: int = DEFAULT_PACK_SIZE, level: int = DEFAULT_LEVEL
    ) -> None:
        self.repo = repo
        self.pack_size = pack_size
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._fd = -1
        self._pack_id = 0
        self._offset = 0
        self._records = bytearray()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.bytes_written = 0
        self.blocks_written = 0
        self.packs_written: list[int] = []

    def add_blocks(self, blocks: Sequence[tuple[bytes, bytes]]) -> bytes:
        """Compresses whole blocks, given as (digest, block), together into one frame."""
        frame = self._cctx.compress(b"".join(block for _, block in blocks))
        return self.add_group(frame, [(slot, digest) for slot, (digest, _) in enumerate(blocks)])

    def add_group(self, frame: bytes | memoryview, members: Sequence[tuple[int, bytes]]) -> bytes:
        """Stores a compressed frame of whole blocks; members are (slot, digest)
        of the blocks to index (a slot left out is a block stored meanwhile).
        Returns their index records (for DedupIndex.update)."""
        pack_id, offset = self.location()
        # One record per block: digest, then (pack, offset, length) shared by
        # the frame, then the slot. Built by concatenation: this runs per block.
        shared = _SHARED.pack(pack_id, offset, len(frame))
        records = b"".join(digest + shared + _SLOTS[slot] for slot, digest in members)
        self.append(frame, records)
        return records

    def location(self) -> tuple[int, int]:
        """(pack id, offset) where the next frame goes, opening a pack if none is."""
        if self._fd < 0:
            self._open()
        return self._pack_id, self._offset

    def append(self, frame: bytes | memoryview, records: bytes) -> None:
        """Writes a frame at location(); records are its blocks' index records."""
        self._records += records
        self._pending.append(bytes(frame))
        self._pending_bytes += len(frame)
        self._offset += len(frame)
        self.bytes_written += len(frame)
        self.blocks_written += len(records) // RECORD_SIZE
        if self._pending_bytes >= 1 << 20:
            self._flush()
        if self._offset >= self.pack_size:
            self.commit()

    def commit(self) -> None:
        """Makes the current pack durable and visible (no-op if none is open)."""
        if self._fd < 0:
            return
        if not self._records:  # opened by location() for frames that were all stored already
            self.abort()
            return
        self._flush()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        atomic_write(
            self.repo.idx_path(self._pack_id), encode_idx(bytes(self._records)), self.repo.tmp_dir
        )
        self.packs_written.append(self._pack_id)

    def abort(self) -> None:
        """Drops the uncommitted pack (committed ones stay: they are valid data)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.repo.pack_path(self._pack_id).unlink(missing_ok=True)

    def _open(self) -> None:
        while True:
            self._pack_id = secrets.randbits(63)
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                self._fd = os.open(self.repo.pack_path(self._pack_id), flags, 0o644)
                break
            except FileExistsError:
                continue
        os.write(self._fd, PACK_MAGIC)
        self._offset = len(PACK_MAGIC)
        self._records = bytearray()

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            self._pending.clear()
            self._pending_bytes = 0


class FrameCache:
    """Decompresses a frame once while its blocks are asked for in turn (the
    blocks of a group are stored, restored and verified side by side)."""

    def __init__(self) -> None:
        self._dctx = zstandard.ZstdDecompressor()
        self._key: tuple[int, int] = (-1, -1)
        self._data = b""

    def block(
        self,
        digest: bytes,
        loc: BlockLocation,
        read: Callable[[BlockLocation], bytes | memoryview],
        where: str,
    ) -> bytes:
        """The block at loc, checked against digest; `read` fetches the compressed
        frame when it is not the cached one. CorruptRepository on any mismatch."""
        key = (loc.pack_id, loc.offset)
        if key != self._key:
            self._key = (-1, -1)  # stays unset if the frame turns out damaged
            self._data = decompress_frame(self._dctx, read(loc), where)
            self._key = key
        return check_block(digest, self._data, loc.slot, where)


class BlockReader:
    """Reads blocks back from packs, checking each against its digest."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._frames = FrameCache()
        self._fds: dict[int, int] = {}

    def read(self, digest: bytes, loc: BlockLocation) -> bytes:
        fd = self._fds.get(loc.pack_id)
        if fd is None:
            fd = self._fds[loc.pack_id] = os.open(self.repo.pack_path(loc.pack_id), os.O_RDONLY)
        where = f"{loc.pack_id:016x}.pack@{loc.offset}"
        return self._frames.block(digest, loc, lambda at: os.pread(fd, at.length, at.offset), where)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def decompress_frame(
    dctx: zstandard.ZstdDecompressor, frame: bytes | memoryview, where: str
) -> bytes:
    try:
        return dctx.decompress(frame, max_output_size=MAX_FRAME_BLOCKS * BLOCK_SIZE)
    except zstandard.ZstdError as e:
        raise CorruptRepository(f"{where}: cannot decompress frame: {e}") from None


def check_block(digest: bytes, data: bytes, slot: int, where: str) -> bytes:
    """Block `slot` of a decompressed frame, if it hashes to digest."""
    block = data[slot * BLOCK_SIZE : (slot + 1) * BLOCK_SIZE]
    if not block or hash_bytes(block) != digest:
        raise CorruptRepository(f"{where}: block {slot} does not match its digest {digest.hex()}")
    return block
