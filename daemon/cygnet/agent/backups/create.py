"""Backing up a branch: a consistent image read through a temporary clone."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from cygnet import backup
from cygnet.agent import layout as L
from cygnet.agent.backups.progress import Reporter, tree_size
from cygnet.agent.backups.temp import TempImages
from cygnet.agent.host import Host
from cygnet.backup import BackupInfo
from cygnet.backup.models import MetadataValue
from cygnet.errors import FailedPrecondition, NotFound

# Waits for another process's backup or prune (ours are serialised in memory).
LOCK_TIMEOUT = 600.0


async def backup_branch(host: Host, repo: Path, branch_id: str, report: Reporter,
                        trigger: str = "") -> BackupInfo:
    """Holds the database's lock throughout: the temporary snapshot pins the branch,
    so a delete or reset of it waits for the backup instead of failing half-way."""
    report.phase("snapshot")
    db, _ = (await host.inventory()).branch_by_id(branch_id)
    async with host.db_locks[db.id], TempImages(host) as images:
        inv = await host.inventory()
        if db.id not in inv.databases or branch_id not in inv.databases[db.id].branches:
            raise NotFound(f"branch {branch_id!r} not found")
        db = inv.databases[db.id]
        branch = db.branches[branch_id]
        if branch.phase != L.PHASE_READY:
            raise FailedPrecondition(f"branch {branch.name!r} is {branch.phase}")
        image = await images.of_branch(branch)
        metadata: dict[str, MetadataValue] = {
            "database": db.name, "database_id": db.id, "branch": branch.name,
            "branch_id": branch.id, "postgres_version": db.version_of(branch),
            "size_class": db.size_class, "snapshot_at": round(image.taken_at, 3),
            "subscriptions": image.subscriptions,
            "host": host.config.host_id or socket.gethostname(),
        }
        if trigger:  # "schedule": retention prunes it (agent/schedules.py)
            metadata["trigger"] = trigger
        files, size = await asyncio.to_thread(tree_size, image.pgdata)
        return await asyncio.to_thread(
            backup.create_backup, repo, image.pgdata, metadata, lock_timeout=LOCK_TIMEOUT,
            progress=report.counter("read", size, files))
