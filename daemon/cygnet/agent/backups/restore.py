"""Restoring a backup into a new branch of its database, or into a new database.

The branch's dataset is made with `zfs create` (phase `creating`, so a crash
leaves nothing the reconciler does not remove), filled from the repository,
fixed up like a clone and started: the image is crash-consistent, so
Postgres runs crash recovery. Any failure destroys what was made.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from cygnet import backup
from cygnet.agent import databases as dbs
from cygnet.agent.backups.progress import Progress, Reporter
from cygnet.agent.branches import Populate, create_branch
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, branch_props
from cygnet.backup import BackupInfo
from cygnet.errors import FailedPrecondition, InvalidArgument, NotFound
from cygnet.postgres.layout import postgres_user

LOCK_TIMEOUT = 600.0


@dataclass(frozen=True)
class Restored:
    database: DatabaseRecord
    branch_id: str
    bytes_written: int
    duration_s: float


def _filler(host: Host, repo: Path, info: BackupInfo, report: Reporter,
            password_from: BranchRecord | None, written: list[int]) -> Populate:
    """Makes the dataset, restores pgdata into it and hands it to postgres."""
    async def populate(branch: BranchRecord) -> int:
        await host.zfs.create(branch.dataset, branch_props(branch))
        pgdata = host.clusters.pgdata(branch)
        progress = report.counter("write", info.logical_bytes, info.file_count)
        result = await asyncio.to_thread(backup.restore, repo, info.backup_id, pgdata,
                                         lock_timeout=LOCK_TIMEOUT, progress=progress)
        written.append(result.bytes_written)
        await asyncio.to_thread(_chown_tree, pgdata)
        if password_from is not None:
            # Branches of a database share its password (it is in the restored catalog).
            host.clusters.write_secret(branch, host.clusters.read_secret(password_from))
        report(Progress("start", result.bytes_written, info.logical_bytes))
        subscriptions = info.metadata.get("subscriptions", 1)
        return subscriptions if isinstance(subscriptions, int) else 1

    return populate


def _chown_tree(root: Path) -> None:
    user = postgres_user()
    os.lchown(root, user.uid, user.gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), user.uid, user.gid)


async def into_branch(host: Host, repo: Path, info: BackupInfo, name: str, request_id: str,
                      report: Reporter) -> Restored:
    """A new branch of the backup's database, a child of its main branch."""
    db_id = str(info.metadata.get("database_id", ""))
    async with host.db_locks[db_id]:
        inv = await host.inventory()
        db = inv.databases.get(db_id)
        if db is None or db.main is None:
            raise NotFound(f"database {info.metadata.get('database')!r} of backup "
                           f"{info.backup_id} no longer exists; restore it as a new database")
        version = str(info.metadata.get("postgres_version", "")) or db.version
        if version != db.version:
            # A backup of an upgraded branch: its data needs its own major.
            raise FailedPrecondition(
                f"backup {info.backup_id} is PostgreSQL {version} data and database "
                f"{db.name!r} runs {db.version}: restore it as a new database")
        written: list[int] = []
        populate = _filler(host, repo, info, report, db.main, written)
        branch = await create_branch(host, inv, db, name, "", "", request_id, populate)
    return Restored(db, branch.id, sum(written), 0.0)


async def into_database(host: Host, repo: Path, info: BackupInfo, name: str, pool: str,
                        request_id: str, report: Reporter) -> Restored:
    """A new database whose main branch is the backup (a new password is set)."""
    version = str(info.metadata.get("postgres_version", ""))
    if not version:
        raise InvalidArgument("backup_id", f"backup {info.backup_id} records no Postgres version")
    written: list[int] = []
    populate = _filler(host, repo, info, report, None, written)
    db, main = await dbs.create_database(host, name, version,
                                         str(info.metadata.get("size_class", "")), pool,
                                         request_id, populate)
    return Restored(db, main.id, sum(written), 0.0)
