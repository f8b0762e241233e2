"""create_backup: store a directory tree, writing only blocks the repository lacks."""

from __future__ import annotations

import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

from cygnet.backup.manifest import Manifest, write_manifest
from cygnet.backup.models import BackupInfo, Metadata, ProgressFn, check_metadata
from cygnet.backup.packs import DEFAULT_LEVEL, DEFAULT_PACK_SIZE, PackWriter, load_index
from cygnet.backup.repo import open_repository
from cygnet.backup.store import store_tree
from cygnet.blocks import DIGEST_SIZE
from cygnet.errors import InvalidArgument


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
            entries, digests = store_tree(source, index, writer, level, progress)
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
