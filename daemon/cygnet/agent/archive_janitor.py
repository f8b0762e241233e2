"""Archived WAL of branches that are gone: kept for `wal_deleted_retention_days`
after its last segment, then removed from the host's repository. Each sweep
also expires deleted databases' backups (backup_janitor.py).

A deleted branch's WAL stays in the repository when it is deleted: a deleted
database is restored from it (`cygnet db restore`), and a live branch's
history may run through a deleted one's generations (a promoted branch
continues the old main's). So the janitor removes a branch's WAL only when
no branch on the host is that branch, no live branch's chain reaches any of
its generations, and nothing was written to it for the retention. The
off-host copy keeps the bucket's own retention (object lock, lifecycle rules).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass

from cygnet.agent import archive, backup_janitor
from cygnet.agent.config import AgentConfig
from cygnet.agent.host import Host
from cygnet.agent.inventory import DatabaseRecord
from cygnet.backup import pruned
from cygnet.wal.plan import load_chain
from cygnet.wal.prune import GenKey
from cygnet.wal.repo import WalRepository

log = logging.getLogger("cygnet.wal")
INTERVAL = 3600.0  # seconds between sweeps: retention is counted in days


@dataclass
class Swept:
    branches: int = 0
    files: int = 0
    bytes: int = 0


def needed_generations(config: AgentConfig, dbs: list[DatabaseRecord]) -> set[GenKey]:
    """Every generation some live branch's history runs through."""
    repo = archive.repository(config)
    out: set[GenKey] = set()
    for db in dbs:
        for branch in db.branches.values():
            head, _ = archive.current_generation(config, db, branch)
            out.update(link.generation.key for link in load_chain(repo, head))
    return out


def sweep(repo: WalRepository, live: set[str], needed: set[GenKey], keep_seconds: float,
          now: float) -> Swept:
    """Removes the WAL of each branch that is not live, not needed and idle `keep_seconds`."""
    done = Swept()
    for branch_id in repo.branches():
        if branch_id in live or any(g.key in needed for g in repo.generations(branch_id)):
            continue
        where = repo.root / branch_id
        files = [p for p in where.rglob("*") if p.is_file()]
        stats = [p.stat() for p in files]
        if now - max((st.st_mtime for st in stats), default=0.0) < keep_seconds:
            continue
        pruned.record(repo.root.parent, pruned.relative(repo.root.parent, files))
        shutil.rmtree(where, ignore_errors=True)
        done.branches += 1
        done.files += len(files)
        done.bytes += sum(st.st_size for st in stats)
    return done


async def sweep_host(host: Host) -> Swept:
    """One sweep of the host's repository against its catalog."""
    dbs = list((await host.catalog()).databases.values())
    live = {b.id for db in dbs for b in db.branches.values()}
    config = host.config

    def run() -> Swept:
        needed = needed_generations(config, dbs)
        return sweep(archive.repository(config), live, needed,
                     config.wal_deleted_retention_days * 86400, time.time())

    done = await asyncio.to_thread(run)
    # Deleted databases' backups, on the same clock (from their deletion).
    await asyncio.to_thread(backup_janitor.expire_quietly, config.backup_repository,
                            config.wal_deleted_retention_days * 86400, time.time())
    if done.branches:
        log.info("removed the archived WAL of %d deleted branch(es): %d files, %d bytes",
                 done.branches, done.files, done.bytes)
    return done


async def run(host: Host, stop: asyncio.Event) -> None:
    """Sweeps every INTERVAL until `stop`."""
    while not stop.is_set():
        try:
            await sweep_host(host)
        except Exception:
            log.exception("sweeping deleted branches' archived WAL failed")
        try:
            await asyncio.wait_for(stop.wait(), INTERVAL)
        except TimeoutError:
            continue
