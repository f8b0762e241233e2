"""create_backup: store a directory tree, writing only blocks the repository lacks."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cygnet.backup.manifest import Entry, Manifest, write_manifest
from cygnet.backup.models import BackupInfo, Metadata, ProgressFn, check_metadata
from cygnet.backup.packs import DEFAULT_LEVEL, DEFAULT_PACK_SIZE, PackWriter, load_index
from cygnet.backup.repo import open_repository
from cygnet.backup.store import store_tree
from cygnet.backup.tree import Skip, SourceItem, scan
from cygnet.blocks import DIGEST_SIZE, DedupIndex
from cygnet.errors import InvalidArgument


@dataclass(frozen=True)
class LiveCopy:
    """A running cluster's directory, read as pgBackRest reads it: the caller has
    called pg_backup_start. `skip` leaves out what a restore must not get
    (postmaster.pid, pg_wal's contents...); `finish`, called once the tree is
    stored, calls pg_backup_stop and returns the files to store last (the WAL
    from the backup's start to its stop, backup_label) and metadata to add."""

    skip: Skip
    finish: Callable[[], tuple[list[SourceItem], Metadata]]


def create_backup(
    repo: str | os.PathLike[str],
    source_dir: str | os.PathLike[str],
    metadata: Metadata,
    *,
    pack_size: int = DEFAULT_PACK_SIZE,
    level: int = DEFAULT_LEVEL,
    lock_timeout: float = 0.0,
    progress: ProgressFn | None = None,
    live: LiveCopy | None = None,
) -> BackupInfo:
    """Backs up source_dir (which must not change meanwhile: point it at a snapshot).

    Creates the repository if needed. Blocks already stored by any backup are
    referenced, not written again, so every backup is incremental and every
    backup is also complete on its own. `progress` is told of each 4 MiB read
    (from the calling thread)."""
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
            if live is None:
                entries, digests = store_tree(source, index, writer, level, progress)
            else:
                entries, digests, extra = _store_live(source, index, writer, level, progress, live)
                meta.update(check_metadata(extra))
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


def _store_live(source: Path, index: DedupIndex, writer: PackWriter, level: int,
                progress: ProgressFn | None, live: LiveCopy
                ) -> tuple[list[Entry], bytes, Metadata]:
    entries, digests = store_tree(source, index, writer, level, progress,
                                  items=scan(source, live.skip), live=True)
    files, nbytes = sum(e.kind == "file" for e in entries), sum(e.size for e in entries)

    def after(f: int, b: int) -> None:  # progress goes on from the tree's totals
        if progress is not None:
            progress(files + f, nbytes + b)

    items, extra = live.finish()
    more, more_digests = store_tree(source, index, writer, level, after, items=items, live=True)
    return entries + more, digests + more_digests, extra
