"""Storing a tree's blocks: parallel reading, hashing and compression, in-order storing.

A backup's speed is set by how fast the source can be read (a clone on
zfs-fuse serves one FUSE request at a time per reader) and by zstd. Worker
threads each read a 4 MiB chunk, hash it and compress the blocks the index
lacks, all with the GIL released (os.pread, the C hasher, zstandard). The
calling thread takes the chunks back in file order and is the only one that
adds to the index and the pack writer, so the repository is written exactly
as a one-thread backup would write it. Memory is bounded by the chunks in
flight: 2 x WORKERS x READ_SIZE of reads plus their compressed blocks.

A `live` source is a running cluster's data directory read between
pg_backup_start and pg_backup_stop (as pgBackRest and pg_basebackup read
it): files may vanish, shrink or grow meanwhile, and WAL replay from the
backup's start repairs whatever was read. A vanished file is left out, a
shrunk one is stored zero-filled to the size it had when opened, a grown one
as far as that size.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from cygnet.backup.manifest import Entry
from cygnet.backup.models import ProgressFn
from cygnet.backup.packs import MAX_GROUP, PackWriter
from cygnet.backup.tree import SourceItem, scan
from cygnet.blocks import BLOCK_SIZE, DIGEST_SIZE, DedupIndex, hash_bytes
from cygnet.errors import FailedPrecondition

READ_SIZE = 4 << 20  # whole blocks, so only a file's last chunk can end in a partial block
# One thread more than cores: while one waits on a read (FUSE serves it in
# zfs-fuse), the others keep the cores busy hashing and compressing. More
# only adds contention (measured: 3 beat 4 and 6 on 2 cores).
WORKERS = min(8, (os.cpu_count() or 1) + 1)


class SourceChanged(FailedPrecondition):
    """A file's size changed while it was read: the source was not a snapshot."""


@dataclass
class _Chunk:
    size: int
    digests: bytes
    # Blocks the index lacked, compressed in groups: (block indexes in slot order, zstd frame).
    frames: list[tuple[list[int], bytes]]


@dataclass
class _File:
    slot: int  # position of its entry
    path: Path
    fd: int
    size: int
    digests: list[bytes] = field(default_factory=list)
    read: int = 0

    @property
    def chunks(self) -> int:
        return -(-self.size // READ_SIZE)


class _ChunkWorker:
    """Runs in the pool: read, hash, compress what the index lacks."""

    def __init__(self, index: DedupIndex, level: int, live: bool = False) -> None:
        self._index = index
        self._level = level
        self._live = live
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        cctx: zstandard.ZstdCompressor | None = getattr(self._local, "cctx", None)
        if cctx is None:  # a compressor context is not thread-safe: one per worker
            cctx = self._local.cctx = zstandard.ZstdCompressor(level=self._level)
        return cctx

    def __call__(self, f: _File, offset: int) -> _Chunk:
        want = min(READ_SIZE, f.size - offset)
        data = _pread_full(f.fd, want, offset)
        if len(data) != want:
            if not self._live:
                raise SourceChanged(f"{f.path} shrank while it was read")
            data += bytes(want - len(data))  # truncated meanwhile: replay truncates it again
        digests = hash_bytes(data)
        # missing() holds the GIL: it sees a consistent index, at worst one
        # that lacks blocks another chunk in flight is about to add.
        todo = self._index.missing(digests)
        cctx = self._compressor()
        frames = []
        view = memoryview(data)
        for group in _groups(todo, len(data)):
            frames.append((group, cctx.compress(_gather(view, group, BLOCK_SIZE))))
        return _Chunk(len(data), digests, frames)


def _gather(data: bytes | memoryview, group: list[int], unit: int) -> bytes | memoryview:
    """The units (blocks, digests) at the group's indexes: a slice, not a copy,
    when they are a run, as they are for every block of a first backup."""
    if group[-1] - group[0] == len(group) - 1:
        return data[group[0] * unit : (group[-1] + 1) * unit]
    return b"".join(data[i * unit : (i + 1) * unit] for i in group)


def _groups(indexes: list[int], size: int) -> list[list[int]]:
    """Runs of at most MAX_GROUP whole blocks; a partial last block goes alone
    (a group's slots are BLOCK_SIZE apart)."""
    whole = [i for i in indexes if (i + 1) * BLOCK_SIZE <= size]
    groups = [whole[k : k + MAX_GROUP] for k in range(0, len(whole), MAX_GROUP)]
    return groups + [[i] for i in indexes if (i + 1) * BLOCK_SIZE > size]


def _pread_full(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length > 0:
        part = os.pread(fd, length, offset)
        if not part:
            break
        parts.append(part)
        length -= len(part)
        offset += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Progress:
    def __init__(self, hook: ProgressFn | None) -> None:
        self.hook = hook
        self.files = 0
        self.bytes = 0

    def add(self, files: int, nbytes: int) -> None:
        self.files += files
        self.bytes += nbytes
        if self.hook is not None:
            self.hook(self.files, self.bytes)


def store_tree(
    source: Path,
    index: DedupIndex,
    writer: PackWriter,
    level: int,
    progress: ProgressFn | None = None,
    workers: int = WORKERS,
    *,
    items: Iterable[SourceItem] | None = None,
    live: bool = False,
) -> tuple[list[Entry], bytes]:
    """Stores every block of the files under source (or of `items`) the index
    lacks; returns the entries (files sized as read) and the digest arrays in
    entry order. `live`: the files may change meanwhile (see above)."""
    entries: list[Entry] = []
    opened: list[_File] = []
    inflight: deque[tuple[_File, Future[_Chunk]]] = deque()
    done = _Progress(progress)
    work = _ChunkWorker(index, level, live)
    todo = scan(source) if items is None else items
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="cygnet-backup") as pool:
            try:
                for f, offset in _chunks(todo, entries, opened, done, live):
                    inflight.append((f, pool.submit(work, f, offset)))
                    while len(inflight) >= 2 * workers:
                        _take(inflight.popleft(), entries, index, writer, done, live)
                while inflight:
                    _take(inflight.popleft(), entries, index, writer, done, live)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # before their fds close
                raise
    finally:
        for f in opened:
            _close(f)
    digests = b"".join(b"".join(f.digests) for f in opened)
    return entries, digests


def _chunks(
    items: Iterable[SourceItem], entries: list[Entry], opened: list[_File], done: _Progress,
    live: bool,
) -> Iterator[tuple[_File, int]]:
    """(file, offset) of every chunk of every file, opening files as it goes;
    directories, symlinks and empty files need no reading."""
    for item in items:
        if item.entry.kind != "file":
            entries.append(item.entry)
            continue
        try:
            fd = os.open(item.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not live:
                raise
            continue  # dropped meanwhile: replay drops it again
        entries.append(item.entry)
        f = _File(len(entries) - 1, item.path, fd, os.fstat(fd).st_size)
        opened.append(f)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        if f.size == 0:
            _finish(f, entries, done, live)
        for k in range(f.chunks):
            yield f, k * READ_SIZE


def _take(
    pending: tuple[_File, Future[_Chunk]],
    entries: list[Entry],
    index: DedupIndex,
    writer: PackWriter,
    done: _Progress,
    live: bool,
) -> None:
    f, future = pending
    chunk = future.result()
    for group, frame in chunk.frames:
        # Blocks stored meanwhile (by an earlier chunk in flight, or a repeat in
        # this frame) get no record; a frame with none left is not written.
        records = index.insert_frame(
            _gather(chunk.digests, group, DIGEST_SIZE), *writer.location(), len(frame)
        )
        if records:
            writer.append(frame, records)
    f.digests.append(chunk.digests)
    f.read += chunk.size
    done.add(0, chunk.size)
    if f.read == f.size:
        _finish(f, entries, done, live)


def _finish(f: _File, entries: list[Entry], done: _Progress, live: bool) -> None:
    if not live and _grew(f):
        raise SourceChanged(f"{f.path} grew while it was read")
    entries[f.slot] = dataclasses.replace(entries[f.slot], size=f.size)
    _close(f)
    done.add(1, 0)


def _grew(f: _File) -> bool:
    return f.fd >= 0 and bool(os.pread(f.fd, 1, f.size))


def _close(f: _File) -> None:
    if f.fd >= 0:
        os.close(f.fd)
        f.fd = -1
