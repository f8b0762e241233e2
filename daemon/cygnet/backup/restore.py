"""restore: rebuild a backed-up tree, checking every block against its digest.

Nothing unverified is left behind: the manifest checksum is checked and every
needed block is located before anything is written, each block is re-hashed
as it is read, and on any failure the partial tree is removed before the
CorruptRepository error propagates. Files are written by a pool of threads
(_ParallelWriter), in 4 MiB chunks.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cygnet.backup.errors import CorruptRepository, RestoreTargetNotEmpty
from cygnet.backup.manifest import Entry, Manifest, read_manifest
from cygnet.backup.models import ProgressFn, RestoreInfo, check_backup_id
from cygnet.backup.packs import BlockReader, load_index
from cygnet.backup.repo import Repository, open_repository
from cygnet.blocks import BLOCK_SIZE, DIGEST_SIZE, BlockLocation, DedupIndex

WRITE_SIZE = 4 << 20  # blocks per chunk a worker restores: 512
# As for reading (store.py): one more thread than cores keeps the cores busy
# while one waits on zfs-fuse.
WORKERS = min(8, (os.cpu_count() or 1) + 1)


def restore(
    repo: str | os.PathLike[str],
    backup_id: str,
    dest_dir: str | os.PathLike[str],
    *,
    lock_timeout: float = 0.0,
    progress: ProgressFn | None = None,
) -> RestoreInfo:
    """Restores a backup into dest_dir, which must be absent or empty.

    File modes and mtimes are restored; ownership is the caller's."""
    check_backup_id(backup_id)
    repository = open_repository(repo)
    dest = Path(dest_dir)
    started = time.monotonic()
    with repository.reader_lock(timeout=lock_timeout):
        manifest = read_manifest(repository, backup_id)
        index, _ = load_index(repository)
        _check_blocks_present(manifest, index)
        created = _prepare_dest(dest)
        reader = BlockReader(repository)
        try:
            written = _write_tree(manifest, dest, index, reader, progress)
        except BaseException:
            _remove_partial(dest, created)
            raise
        finally:
            reader.close()
    return RestoreInfo(backup_id, manifest.info.file_count, written, time.monotonic() - started)


def _check_blocks_present(manifest: Manifest, index: DedupIndex) -> None:
    missing = index.missing(manifest.digests)
    if missing:
        sample = [manifest.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE].hex() for i in missing]
        raise CorruptRepository(
            f"backup {manifest.info.backup_id}: {len(missing)} blocks are missing",
            [f"missing block {d}" for d in sample[:20]],
        )


def _prepare_dest(dest: Path) -> bool:
    """Returns whether dest was created here (and so may be removed on failure)."""
    try:
        dest.mkdir(mode=0o700)
        return True
    except FileExistsError:
        if not dest.is_dir() or any(dest.iterdir()):
            raise RestoreTargetNotEmpty(f"{dest} exists and is not an empty directory") from None
        return False


def _remove_partial(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _write_tree(
    manifest: Manifest,
    dest: Path,
    index: DedupIndex,
    reader: BlockReader,
    progress: ProgressFn | None = None,
    workers: int = WORKERS,
) -> int:
    digests = dict((e.path, d) for e, d in manifest.files())
    dirs = {"."}
    writer = _ParallelWriter(reader.repo, index, workers, progress)
    try:
        for entry in manifest.entries:
            path = dest / _checked_path(entry, dirs)
            if entry.kind == "dir":
                path.mkdir(mode=0o700, exist_ok=True)  # final mode once its contents exist
            elif entry.kind == "symlink":
                os.symlink(entry.target, path)
            else:
                writer.add(path, entry, digests[entry.path])
        writer.drain(0)
    finally:
        writer.close()
    # Directory modes and mtimes last (deepest first): writing into them changes mtime.
    for entry in reversed(manifest.entries):
        if entry.kind == "dir":
            path = dest / entry.path
            os.chmod(path, entry.mode)
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
    return writer.written


def _checked_path(entry: Entry, dirs: set[str]) -> str:
    """Refuses paths that would leave dest: each parent must be a restored directory."""
    parent, _, name = entry.path.rpartition("/")
    if entry.path == "." and entry.kind == "dir":
        return entry.path
    if name in ("", ".", "..") or (parent or ".") not in dirs:
        raise CorruptRepository(f"manifest entry has an unsafe path: {entry.path!r}")
    if entry.kind == "dir":
        dirs.add(entry.path)
    return entry.path


@dataclass
class _OpenFile:
    path: Path
    entry: Entry
    fd: int
    chunks_left: int


class _ParallelWriter:
    """Writes files in WRITE_SIZE chunks on worker threads (each with its own
    BlockReader): decompressing, re-hashing and writing run without the GIL,
    and writes through zfs-fuse overlap instead of queueing behind one thread.
    Chunks are taken back in order, so a failure surfaces as the first bad
    chunk's error, and at most 2 x workers chunks are in flight."""

    def __init__(self, repo: Repository, index: DedupIndex, workers: int,
                 progress: ProgressFn | None) -> None:
        self._repo = repo
        self._index = index
        self._local = threading.local()
        self._readers: list[BlockReader] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="cygnet-restore")
        self._workers = workers
        self._inflight: deque[tuple[_OpenFile, Future[int]]] = deque()
        self._open: list[_OpenFile] = []
        self._progress = progress
        self.written = 0
        self.files = 0

    def add(self, path: Path, entry: Entry, digests: bytes) -> None:
        try:  # O_EXCL: never through a symlink the manifest made
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise CorruptRepository(f"manifest entry {entry.path!r} is listed twice") from None
        step = WRITE_SIZE // BLOCK_SIZE * DIGEST_SIZE
        f = _OpenFile(path, entry, fd, -(-len(digests) // step))
        self._open.append(f)
        if f.chunks_left == 0:
            self._finish(f)
        for k, off in enumerate(range(0, len(digests), step)):
            future = self._pool.submit(self._chunk, fd, digests[off : off + step],
                                       k * WRITE_SIZE)
            self._inflight.append((f, future))
            self.drain(2 * self._workers)

    def drain(self, keep: int) -> None:
        while len(self._inflight) > keep:
            f, future = self._inflight.popleft()
            self.written += future.result()
            f.chunks_left -= 1
            if f.chunks_left == 0:
                self._finish(f)

    def _reader(self) -> BlockReader:
        reader: BlockReader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = BlockReader(self._repo)
            with self._lock:
                self._readers.append(reader)
        return reader

    def _chunk(self, fd: int, digests: bytes, offset: int) -> int:
        reader = self._reader()
        blocks = []
        for off in range(0, len(digests), DIGEST_SIZE):
            digest = digests[off : off + DIGEST_SIZE]
            loc = self._index.get(digest)
            assert loc is not None  # checked by _check_blocks_present
            blocks.append(reader.read(digest, BlockLocation(*loc)))
        total = sum(len(b) for b in blocks)
        n = os.pwritev(fd, blocks, offset)  # no joined copy of the chunk
        if n < total:  # a short write: the rest in one piece
            rest = memoryview(b"".join(blocks))[n:]
            while rest:
                k = os.pwrite(fd, rest, offset + n)
                rest, n = rest[k:], n + k
        return total

    def _finish(self, f: _OpenFile) -> None:
        os.fchmod(f.fd, f.entry.mode)
        os.utime(f.fd, ns=(f.entry.mtime_ns, f.entry.mtime_ns))
        os.close(f.fd)
        f.fd = -1
        self.files += 1
        if self._progress is not None:
            self._progress(self.files, self.written)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)  # before the fds close
        for f in self._open:
            if f.fd >= 0:
                os.close(f.fd)
        for reader in self._readers:
            reader.close()
