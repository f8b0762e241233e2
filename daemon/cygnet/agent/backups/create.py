"""Backing up a branch: a running one from its live files (live.py), a stopped
one through a temporary clone of a snapshot (temp.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from cygnet import backup
from cygnet.agent import layout as L
from cygnet.agent.backups import live
from cygnet.agent.backups.progress import Reporter, tree_size
from cygnet.agent.backups.temp import TempImages
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.backup import BackupInfo
from cygnet.backup.create import LiveCopy
from cygnet.backup.models import MetadataValue
from cygnet.errors import FailedPrecondition, NotFound

log = logging.getLogger("cygnet.agent")

# Waits for another process's backup or prune (ours are serialised in memory).
LOCK_TIMEOUT = 600.0


async def backup_branch(host: Host, repo: Path, branch_id: str, report: Reporter,
                        trigger: str = "") -> BackupInfo:
    """Holds the database's lock throughout, so a delete or reset of the branch
    waits for the backup instead of failing half-way."""
    report.phase("snapshot")
    db, _ = (await host.inventory()).branch_by_id(branch_id)
    async with host.db_locks[db.id]:
        inv = await host.inventory()
        if db.id not in inv.databases or branch_id not in inv.databases[db.id].branches:
            raise NotFound(f"branch {branch_id!r} not found")
        db = inv.databases[db.id]
        branch = db.branches[branch_id]
        if branch.phase != L.PHASE_READY:
            raise FailedPrecondition(f"branch {branch.name!r} is {branch.phase}")
        metadata = _metadata(host, db, branch)
        if trigger:  # "schedule": retention prunes it (agent/schedules.py)
            metadata["trigger"] = trigger
        if host.clusters.accepting(branch):
            try:
                return await _from_live(host, repo, branch, metadata, report)
            except live.LiveUnavailable as exc:
                log.warning("branch %s: no online backup (%s); reading a snapshot", branch.id,
                            exc)
        return await _from_snapshot(host, repo, branch, metadata, report)


def _metadata(host: Host, db: DatabaseRecord, branch: BranchRecord
              ) -> dict[str, MetadataValue]:
    return {
        "database": db.name, "database_id": db.id, "branch": branch.name,
        "branch_id": branch.id, "postgres_version": db.version_of(branch),
        "size_class": db.size_class,
        "host": host.config.host_id or socket.gethostname(),
    }


async def _from_live(host: Host, repo: Path, branch: BranchRecord,
                     metadata: dict[str, MetadataValue], report: Reporter) -> BackupInfo:
    pgdata = host.clusters.pgdata(branch)
    loop = asyncio.get_running_loop()
    async with live.LiveBackup(host.clusters.socket_dir(branch), branch.port, pgdata) as session:
        metadata["subscriptions"] = session.subscriptions
        files, size = await asyncio.to_thread(tree_size, pgdata)

        def finish() -> tuple[list[backup.tree.SourceItem], backup.Metadata]:
            # Runs in the backup's thread; the session lives on the event loop.
            return asyncio.run_coroutine_threadsafe(session.stop(), loop).result()

        return await asyncio.to_thread(
            backup.create_backup, repo, pgdata, metadata, lock_timeout=LOCK_TIMEOUT,
            progress=report.counter("read", size, files), live=LiveCopy(live.skip, finish))


async def _from_snapshot(host: Host, repo: Path, branch: BranchRecord,
                         metadata: dict[str, MetadataValue], report: Reporter) -> BackupInfo:
    """A branch that does not run (or not yet accept): a snapshot, read through a
    temporary clone (a CHECKPOINT first if it runs)."""
    async with TempImages(host) as images:
        image = await images.of_branch(branch)
        metadata |= {"snapshot_at": round(image.taken_at, 3),
                     "subscriptions": image.subscriptions}
        files, size = await asyncio.to_thread(tree_size, image.pgdata)
        return await asyncio.to_thread(
            backup.create_backup, repo, image.pgdata, metadata, lock_timeout=LOCK_TIMEOUT,
            progress=report.counter("read", size, files))
