"""Backups of deleted databases: kept for `wal_deleted_retention_days` after the
deletion, then pruned from the host's repository.

A deleted database's backups stay so that it can come back (`cygnet db restore`,
or `cygnet backup restore ID --db NAME`). The deletion writes its time into
`deleted-databases.json` beside the backups (mark_deleted), and the sweep after
the retention prunes the backups whose metadata names that database: their
blocks go with the last backup using them. Only a deletion counts: a database
that moved to another host, or whose copy here became a replica, keeps its
backups here. The archived WAL of a deleted database expires on the same
clock (archive_janitor.py). The off-host copies keep the bucket's own
retention (object lock, lifecycle rules).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from cygnet import backup
from cygnet.backup.fsutil import atomic_write
from cygnet.errors import CygnetError

log = logging.getLogger("cygnet.backup")

TOMBSTONES = "deleted-databases.json"
LOCK_TIMEOUT = 5.0  # a backup running now holds the lock: the next sweep prunes
_file_lock = threading.Lock()  # deletions and sweeps run in worker threads


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write(path: Path, tombstones: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(tombstones, sort_keys=True) + "\n"
    atomic_write(path, [text.encode()], path.parent)


def mark_deleted(repo: Path, database_id: str, now: float) -> None:
    """Records when `database_id` was deleted (the first time only). Never stops the
    deletion: a full disk here only keeps its backups until `cygnet backup prune`."""
    with _file_lock:
        tombstones = _read(repo / TOMBSTONES)
        if database_id in tombstones:
            return
        tombstones[database_id] = now
        try:
            _write(repo / TOMBSTONES, tombstones)
        except OSError as exc:
            log.warning("database %s: its deletion time was not recorded, so its backups "
                        "stay until `cygnet backup prune`: %s", database_id, exc)


def mark_present(repo: Path, database_id: str) -> None:
    """`database_id` lives here (again: moved back): its backups here do not expire."""
    with _file_lock:
        tombstones = _read(repo / TOMBSTONES)
        if tombstones.pop(database_id, None) is not None:
            _write(repo / TOMBSTONES, tombstones)


def expire(repo: Path, keep_seconds: float, now: float) -> list[str]:
    """Prunes the backups of every database deleted `keep_seconds` ago or more and
    forgets those deletions; returns the pruned backup ids."""
    with _file_lock:
        tombstones = _read(repo / TOMBSTONES)
        due = {db for db, at in tombstones.items() if now - at >= keep_seconds}
        if not due:
            return []
        doomed = []
        if (repo / "backups").is_dir():
            doomed = [info.backup_id
                      for info in backup.list_backups(repo, lock_timeout=LOCK_TIMEOUT)
                      if info.metadata.get("database_id") in due]
        if doomed:
            backup.prune(repo, delete=doomed, lock_timeout=LOCK_TIMEOUT)
            log.info("pruned %d backup(s) of %d database(s) deleted %.1f days ago or more: %s",
                     len(doomed), len(due), keep_seconds / 86400, ", ".join(doomed))
        _write(repo / TOMBSTONES, {db: at for db, at in tombstones.items() if db not in due})
        return doomed


def expire_quietly(repo: Path, keep_seconds: float, now: float) -> list[str]:
    """expire(), with a busy or damaged repository logged (the next sweep tries again)."""
    try:
        return expire(repo, keep_seconds, now)
    except CygnetError as exc:
        log.warning("backups of deleted databases not pruned this time: %s", exc)
        return []
