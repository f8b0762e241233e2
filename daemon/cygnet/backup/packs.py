"""Pack files: each distinct block stored once as a zstd frame.

A pack is PACK_MAGIC followed by frames. Its .idx holds IDX_MAGIC, a record
count, the DedupIndex records (digest, pack id, frame offset, frame length)
and an XXH3-128 of all that. The pack is fsynced before its .idx is renamed
into place, so an .idx always describes durable data; a pack without an
.idx is an interrupted write and is garbage.
"""

from __future__ import annotations

import os
import secrets
import struct

import xxhash
import zstandard

from cygnet.backup.errors import CorruptRepository
from cygnet.backup.fsutil import atomic_write
from cygnet.backup.repo import Repository
from cygnet.blocks import BLOCK_SIZE, RECORD_SIZE, BlockLocation, DedupIndex, hash_bytes

PACK_MAGIC = b"CYGPACK1"
IDX_MAGIC = b"CYGIDX01"
DEFAULT_PACK_SIZE = 32 << 20
DEFAULT_LEVEL = 1  # pages compress well at level 1; higher levels cost CPU for little
_RECORD = struct.Struct("<16sQQII")


def encode_idx(records: bytes) -> list[bytes]:
    header = IDX_MAGIC + (len(records) // RECORD_SIZE).to_bytes(8, "little")
    return [header, records, xxhash.xxh3_128_digest(header + records)]


def decode_idx(data: bytes, name: str) -> bytes:
    """The records of an .idx file; CorruptRepository if it fails its checksum."""
    body, checksum = data[:-16], data[-16:]
    if len(data) < 32 or body[:8] != IDX_MAGIC or xxhash.xxh3_128_digest(body) != checksum:
        raise CorruptRepository(f"{name}: pack index fails its checksum")
    records = body[16:]
    if len(records) != int.from_bytes(body[8:16], "little") * RECORD_SIZE:
        raise CorruptRepository(f"{name}: pack index record count mismatch")
    return records


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

    def add(self, digest: bytes, block: bytes | memoryview) -> BlockLocation:
        return self.add_frame(digest, self._cctx.compress(block))

    def add_frame(self, digest: bytes, frame: bytes) -> BlockLocation:
        """Stores an already-compressed frame (prune copies frames unchanged)."""
        if self._fd < 0:
            self._open()
        loc = BlockLocation(self._pack_id, self._offset, len(frame))
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        self._records += _RECORD.pack(digest, loc.pack_id, loc.offset, loc.length, 0)
        self._offset += len(frame)
        self.bytes_written += len(frame)
        self.blocks_written += 1
        if self._pending_bytes >= 1 << 20:
            self._flush()
        if self._offset >= self.pack_size:
            self.commit()
        return loc

    def commit(self) -> None:
        """Makes the current pack durable and visible (no-op if none is open)."""
        if self._fd < 0:
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


class BlockReader:
    """Reads blocks back from packs, checking each against its digest."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._dctx = zstandard.ZstdDecompressor()
        self._fds: dict[int, int] = {}

    def read(self, digest: bytes, loc: BlockLocation) -> bytes:
        fd = self._fds.get(loc.pack_id)
        if fd is None:
            fd = self._fds[loc.pack_id] = os.open(self.repo.pack_path(loc.pack_id), os.O_RDONLY)
        frame = os.pread(fd, loc.length, loc.offset)
        return check_frame(self._dctx, digest, frame, f"{loc.pack_id:016x}.pack@{loc.offset}")

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def check_frame(dctx: zstandard.ZstdDecompressor, digest: bytes, frame: bytes, where: str) -> bytes:
    """Decompresses a frame and checks it hashes to digest (CorruptRepository if not)."""
    try:
        block = dctx.decompress(frame, max_output_size=BLOCK_SIZE)
    except zstandard.ZstdError as e:
        raise CorruptRepository(f"{where}: cannot decompress block: {e}") from None
    if hash_bytes(block) != digest or not block:
        raise CorruptRepository(f"{where}: block does not match its digest {digest.hex()}")
    return block
