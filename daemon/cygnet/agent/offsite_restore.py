"""Restoring a database from the off-host repository alone, on any host
(docs/durability.md, "Rehearsing a host loss").

What `from_host` uploaded is fetched into this host's cache repository
(`STATE_DIR/offsite-cache/HOST/`): every generation record of its archived
WAL (small), then the chosen main's WAL along its ancestry, then the one
backup the restore starts from. The restore itself is the deleted-database
restore (agent/archive_restore.py) reading that cache instead of the host's
own repository.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cygnet.agent import offsite
from cygnet.backup import BackupInfo
from cygnet.errors import NotFound, OutOfRange
from cygnet.wal.plan import Link, load_chain
from cygnet.wal.repo import META, Generation, WalRepository


def _newest_main(repo_dir: Path, name: str, from_host: str) -> Generation:
    repo = WalRepository(repo_dir)
    heads = [gens[-1] for gens in map(repo.generations, repo.branches())
             if gens and gens[-1].database == name and gens[-1].branch == "main"]
    if not heads:
        raise NotFound(f"no archived WAL of a database {name!r} under host {from_host!r} in "
                       "the off-host repository")
    return max(heads, key=lambda g: g.created)


async def remote_source(name: str, from_host: str
                        ) -> tuple[Generation, list[Link], list[BackupInfo], Path]:
    """(main's newest generation, its chain, its backups oldest first, the cache
    repository) of the newest database called `name` that `from_host` archived."""
    svc = offsite.required()
    if from_host not in await svc.hosts():
        raise NotFound(f"from_host: host {from_host!r} has nothing in the off-host repository")
    metas = [rel for rel in await svc.remote_objects(from_host, "wal/")
             if rel.endswith("/" + META)]
    repo_dir = await svc.fetch_objects(from_host, metas)
    main = _newest_main(repo_dir, name, from_host)
    await svc.fetch_wal(from_host, main.branch_id)
    backups = sorted((info for host, info in await svc.list_remote()
                      if host == from_host and info.metadata.get("branch_id") == main.branch_id),
                     key=lambda b: b.created_at)
    if not backups:
        raise OutOfRange(f"database {name!r} has archived WAL off-host but no backup of its "
                         "main to start from: schedule backups (docs/durability.md)")
    chain = await asyncio.to_thread(load_chain, WalRepository(repo_dir), main)
    return main, chain, backups, repo_dir


async def fetch_backup(from_host: str, backup_id: str) -> Path:
    """The cache repository, now holding `backup_id` of from_host's prefix."""
    from cygnet.offsite import fetch

    svc = offsite.required()
    return await asyncio.to_thread(fetch.fetch_backup, svc.store, svc.config.keyring,
                                   from_host, backup_id, svc.cache / from_host)
