"""Restoring a deleted database from the host's repository: its newest backup at
or before the target, then its archived WAL replayed to the target
(docs/durability.md, "Deleted databases").

The backup is restored into a new database's main (agent/backups/restore.py's
way: `zfs create`, fill, chown); before the normal first start, the files run
a point-in-time recovery (agent/recovery.py) with the old main's archive chain,
from the WAL position the backup starts at (its backup_label, else its
control file's redo point), and stop cleanly. The new database gets new ids
and a new password; its own archive starts afresh.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cygnet import backup
from cygnet.agent import archive, offsite_restore, recovery
from cygnet.agent import databases as dbs
from cygnet.agent.branches import Populate
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, branch_props
from cygnet.agent.recovery import Target
from cygnet.backup import BackupInfo
from cygnet.errors import Aborted, NotFound, OutOfRange
from cygnet.postgres import process
from cygnet.postgres.layout import postgres_user
from cygnet.postgres.versions import resolve_version
from cygnet.wal.lsn import format_lsn, parse_lsn
from cygnet.wal.plan import Link, load_chain, selection, window
from cygnet.wal.repo import Generation

LOCK_TIMEOUT = 600.0
_LABEL = re.compile(r"^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", re.MULTILINE)
_REDO = re.compile(r"^Latest checkpoint's REDO location:\s+([0-9A-F]+/[0-9A-F]+)", re.MULTILINE)


@dataclass(frozen=True)
class Source:
    main: Generation  # the deleted database's main, newest generation
    chain: list[Link]
    backups: list[BackupInfo]  # of that main, oldest first
    repository: Path | None = None  # None: the host's; else an off-host cache


def find_source(host: Host, name: str) -> Source:
    """The newest database called `name` whose main archived WAL here (blocking)."""
    repo = archive.repository(host.config)
    heads: dict[str, Generation] = {}
    for branch_id in repo.branches():
        gens = repo.generations(branch_id)
        if gens and gens[-1].database == name and gens[-1].branch == "main":
            heads[branch_id] = gens[-1]
    if not heads:
        raise NotFound(f"no archived WAL of a database {name!r} in the repository "
                       f"({host.config.backup_repository})")
    main = max(heads.values(), key=lambda g: g.created)
    backups = sorted((b for b in backup.list_backups(host.config.backup_repository,
                                                     lock_timeout=LOCK_TIMEOUT)
                      if b.metadata.get("branch_id") == main.branch_id),
                     key=lambda b: b.created_at)
    if not backups:
        raise OutOfRange(f"database {name!r} has archived WAL but no backup of its main to "
                         "start from: schedule backups to keep deleted databases recoverable")
    return Source(main, load_chain(repo, main), backups)


def choose_backup(source: Source, target: Target) -> BackupInfo:
    if target.time:
        fits = [b for b in source.backups
                if b.created_at.timestamp() + b.duration_s <= target.time]
        if not fits:
            first = source.backups[0]
            raise OutOfRange(f"{target.describe()} is before the first backup of "
                             f"{source.main.database!r} ({first.created_at.isoformat()})")
        return fits[-1]
    # An LSN target: the oldest, which starts below any LSN the archive holds.
    return source.backups[0] if target.lsn else source.backups[-1]


def start_lsn(pgdata: Path, bindir: Path) -> int:
    """Where the restored files' recovery starts reading WAL."""
    label = pgdata / "backup_label"
    if label.exists():
        found = _LABEL.search(label.read_text(errors="replace"))
        if found:
            return parse_lsn(found.group(1))
    out = subprocess.run([str(bindir / "pg_controldata"), "-D", str(pgdata)],
                         capture_output=True, text=True, timeout=60,
                         env={"LC_ALL": "C"}).stdout
    found = _REDO.search(out)
    if not found:
        raise Aborted("the restored backup has no readable control file")
    return parse_lsn(found.group(1))


def _chown_tree(root: Path) -> None:
    user = postgres_user()
    os.lchown(root, user.uid, user.gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, entry), user.uid, user.gid)


def _filler(host: Host, source: Source, info: BackupInfo, target: Target) -> Populate:
    async def populate(main: BranchRecord) -> int:
        await host.zfs.create(main.dataset, branch_props(main))
        pgdata = host.clusters.pgdata(main)
        await asyncio.to_thread(backup.restore, source.repository or host.config.backup_repository,
                                info.backup_id,
                                pgdata, lock_timeout=LOCK_TIMEOUT)
        await asyncio.to_thread(_chown_tree, pgdata)
        db = DatabaseRecord(main.database_id, source.main.database, "", main.dataset.split("/")[0],
                            str(info.metadata.get("postgres_version", "")),
                            str(info.metadata.get("size_class", "")), "", 0.0, "")
        bindir = resolve_version(db.version, host.config.postgres_root)[1]
        begin = await asyncio.to_thread(start_lsn, pgdata, bindir)
        reach = window(source.chain, begin)
        if (target.time and target.time > reach.end_time) or target.lsn > reach.end_lsn:
            raise OutOfRange(f"{target.describe()} is outside the archived WAL of "
                             f"{source.main.database!r} after backup {info.backup_id}: LSN "
                             f"{format_lsn(begin)} to {format_lsn(reach.end_lsn)} "
                             f"(written until {Target(time=reach.end_time).describe()})")
        await recovery.recover(host, db, main, selection(source.chain, begin), target,
                               workers=False)
        await process.stop(pgdata, "fast")
        return 1  # subscriptions may exist: the first start disarms them

    return populate


async def restore_database(host: Host, name: str, target: Target, new_name: str, pool: str,
                           request_id: str, from_host: str = ""
                           ) -> tuple[DatabaseRecord, BranchRecord]:
    if from_host:  # from the off-host repository alone (agent/offsite_restore.py)
        source = Source(*await offsite_restore.remote_source(name, from_host))
        info = choose_backup(source, target)
        await offsite_restore.fetch_backup(from_host, info.backup_id)
    else:
        source = await asyncio.to_thread(find_source, host, name)
        info = choose_backup(source, target)
    return await dbs.create_database(
        host, new_name or name, str(info.metadata.get("postgres_version", "")),
        str(info.metadata.get("size_class", "")), pool, request_id,
        _filler(host, source, info, target))
