"""create_backup: store a directory tree, writing only blocks the repository lacks."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cygnet.backup.manifest import Entry, Manifest, write_manifest
from cygnet.backup.models import BackupInfo, Metadata, ProgressFn, check_metadata
from cygnet.backup.packs import DEFAULT_LEVEL, DEFAULT_PACK_SIZE, PackWriter, load_index
from cygnet.backup.repo import open_repository
from cygnet.backup.tree import scan
from cygnet.blocks import BLOCK_SIZE, DIGEST_SIZE, DedupIndex, hash_bytes
from cygnet.errors import InvalidArgument

READ_SIZE = 4 << 20  # whole blocks, so only a file's last block can be partial


def create_backup(
    repo: str | os.PathLike[str],
    source_dir: str | os.PathLike[str],
    metadata: Metadata,
    *,
    pack_size: int = DEFAULT_PACK_SIZE,
    level: int = DEFAULT_LEVEL,
    lock_timeout: float = 0.0,
    progress: ProgressFn | None = None,
) -> BackupInfo:
    """Backs up source_dir (which must not change meanwhile: point it at a snapshot).

    Creates the repository if needed. Blocks already stored by any backup are
    referenced, not written again, so every backup is incremental and every
    backup is also complete on its own. `progress` is told of each 4 MiB read."""
    source = Path(source_dir)
    if not source.is_dir():
        raise InvalidArgument("source_dir", f"{source} is not a directory")
    meta = check_metadata(metadata)
    repository = open_repository(repo, create=True)
    started, created_at = time.monotonic(), datetime.now(UTC)
    with repository.writer_lock(lock_timeout):
        repository.clean_garbage()
        index, _ = load_index(repository)  # unreadable .idx: its blocks are stored again
        writer = PackWriter(repository, pack_size, level)
        try:
            entries, digests = _store_tree(source, index, writer, progress)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        info = BackupInfo(
            backup_id=created_at.strftime("%Y%m%dT%H%M%S%fZ-") + secrets.token_hex(4),
            created_at=created_at,
            metadata=meta,
            file_count=sum(e.kind == "file" for e in entries),
            logical_bytes=sum(e.size for e in entries),
            block_count=len(digests) // DIGEST_SIZE,
            new_blocks=writer.blocks_written,
            new_bytes=writer.bytes_written,
            duration_s=round(time.monotonic() - started, 6),
        )
        write_manifest(repository, Manifest(info, entries, digests))
    return info


def _store_tree(
    source: Path, index: DedupIndex, writer: PackWriter, progress: ProgressFn | None
) -> tuple[list[Entry], bytes]:
    entries: list[Entry] = []
    digests: list[bytes] = []
    buf = bytearray(READ_SIZE)
    files = done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(files, done)

    for item in scan(source):
        entry = item.entry
        if entry.kind == "file":
            file_digests, size = _store_file(item.path, index, writer, buf, advance)
            entry = dataclasses.replace(entry, size=size)
            digests.append(file_digests)
            files += 1
            advance(0)
        entries.append(entry)
    return entries, b"".join(digests)


def _store_file(
    path: Path,
    index: DedupIndex,
    writer: PackWriter,
    buf: bytearray,
    advance: Callable[[int], None],
) -> tuple[bytes, int]:
    digests: list[bytes] = []
    size = 0
    with open(path, "rb", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := _read_full(f.fileno(), buf):
            chunk = memoryview(buf)[:n]
            chunk_digests = hash_bytes(chunk)
            for i in index.missing(chunk_digests):
                digest = chunk_digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]
                if digest not in index:  # repeated within this chunk
                    loc = writer.add(digest, chunk[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE])
                    index.insert(digest, *loc)
            digests.append(chunk_digests)
            size += n
            advance(n)
            if n < len(buf):
                break
    return b"".join(digests), size


def _read_full(fd: int, buf: bytearray) -> int:
    """Fills buf unless end of file comes first; returns the byte count."""
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got
