"""Listing backups and choosing what a retention rule deletes (pure, no I/O but reads)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from cygnet import backup
from cygnet.backup import BackupInfo, RepositoryNotFound
from cygnet.errors import InvalidArgument
from cygnet.names import shown

LIST_LOCK_TIMEOUT = 60.0


def list_backups(repo: Path) -> list[BackupInfo]:
    """Oldest first; an absent repository has no backups."""
    try:
        return backup.list_backups(repo, lock_timeout=LIST_LOCK_TIMEOUT)
    except RepositoryNotFound:
        return []


def matches(info: BackupInfo, database: str, branch: str) -> bool:
    """Whether a backup is of `database` (id or name; empty: any) and `branch`."""
    meta = info.metadata
    if database and database not in (meta.get("database_id"), meta.get("database")):
        return False
    return not branch or branch in (meta.get("branch_id"), meta.get("branch"))


def retention(infos: list[BackupInfo], keep_last: int, database: str) -> list[str]:
    """Backups beyond the newest `keep_last` of each branch (of `database`, if given)."""
    by_branch: defaultdict[tuple[str, str], list[BackupInfo]] = defaultdict(list)
    for info in infos:
        if matches(info, database, ""):
            key = (str(info.metadata.get("database_id")), str(info.metadata.get("branch_id")))
            by_branch[key].append(info)
    doomed: list[str] = []
    for group in by_branch.values():
        group.sort(key=lambda i: (i.created_at, i.backup_id))
        doomed += [i.backup_id for i in group[: max(0, len(group) - keep_last)]]
    return doomed


def check_ids(ids: list[str]) -> list[str]:
    for backup_id in ids:
        if not backup.models.BACKUP_ID_RE.fullmatch(backup_id):
            raise InvalidArgument("backup_ids", f"not a backup id: {shown(backup_id)}")
    return ids
