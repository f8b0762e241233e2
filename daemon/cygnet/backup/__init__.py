"""Deduplicating block-level backups of directory trees (PostgreSQL data dirs).

A repository is a directory (layout in repo.py). Every distinct 8 KiB block
is stored once, zstd-compressed, in pack files; every backup is a manifest
of its files and their block digests plus caller metadata. Backups are thus
incremental to write yet each complete to restore. The caller points
create_backup at an unchanging tree (a ZFS clone of a snapshot); this
package knows nothing of ZFS or gRPC.
"""

from __future__ import annotations

import os

from cygnet.backup.create import create_backup
from cygnet.backup.diff import DataDirDiff, RelationChange, RelFileKey, diff_backups, diff_data_dirs
from cygnet.backup.errors import (
    BackupNotFound,
    CorruptRepository,
    RepositoryLocked,
    RepositoryNotFound,
    RestoreTargetNotEmpty,
)
from cygnet.backup.manifest import read_info
from cygnet.backup.models import (
    BackupInfo,
    Metadata,
    ProgressFn,
    PruneReport,
    RestoreInfo,
    VerifyIssue,
    VerifyReport,
    check_backup_id,
)
from cygnet.backup.prune import prune
from cygnet.backup.repo import init_repository, open_repository
from cygnet.backup.restore import restore
from cygnet.backup.verify import verify

__all__ = [
    "BackupInfo",
    "BackupNotFound",
    "CorruptRepository",
    "DataDirDiff",
    "Metadata",
    "ProgressFn",
    "PruneReport",
    "RelFileKey",
    "RelationChange",
    "RepositoryLocked",
    "RepositoryNotFound",
    "RestoreInfo",
    "RestoreTargetNotEmpty",
    "VerifyIssue",
    "VerifyReport",
    "create_backup",
    "diff_backups",
    "diff_data_dirs",
    "get_backup",
    "init_repository",
    "list_backups",
    "prune",
    "restore",
    "verify",
]


def list_backups(repo: str | os.PathLike[str], *, lock_timeout: float = 0.0) -> list[BackupInfo]:
    """All backups, oldest first (reads manifest headers only)."""
    repository = open_repository(repo)
    with repository.reader_lock(timeout=lock_timeout):
        infos = [read_info(repository, b) for b in repository.backup_ids()]
    return sorted(infos, key=lambda i: (i.created_at, i.backup_id))


def get_backup(repo: str | os.PathLike[str], backup_id: str) -> BackupInfo:
    repository = open_repository(repo)
    check_backup_id(backup_id)
    if not repository.manifest_path(backup_id).exists():
        raise BackupNotFound(f"no backup {backup_id}")
    return read_info(repository, backup_id)
