"""Per-relation page changes between two data directories or two backups.

Trees are compared by their 8 KiB page digests (cygnet.blocks.pgdiff); for
backups the digests come from the manifests, so nothing is read but them.
"""

from __future__ import annotations

import os

from cygnet.backup.manifest import read_manifest
from cygnet.backup.models import check_backup_id
from cygnet.backup.repo import open_repository
from cygnet.blocks.pgdiff import (
    DataDirDiff,
    RelationChange,
    RelFileKey,
    diff_data_dirs,
    diff_digest_maps,
)

__all__ = ["DataDirDiff", "RelFileKey", "RelationChange", "diff_backups", "diff_data_dirs"]


def diff_backups(repo: str | os.PathLike[str], old_id: str, new_id: str) -> DataDirDiff:
    """Pages changed from backup old_id to backup new_id (manifest checksums are checked)."""
    repository = open_repository(repo)
    maps = []
    with repository.reader_lock():
        for backup_id in (check_backup_id(old_id), check_backup_id(new_id)):
            manifest = read_manifest(repository, backup_id)
            maps.append({entry.path: digests for entry, digests in manifest.files()})
    return diff_digest_maps(maps[0], maps[1])
