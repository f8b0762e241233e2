"""A moved database's archived WAL goes with it (docs/ha.md, "Moving databases").

Moves carry every snapshot, and a point-in-time branch replays archived WAL on
top of one; without the archive, the target could reach no point before the
move. Once main runs on the target (the downtime is over), the target asks the
source for the database's archive: every generation of its branches, and of
the branches those continue (a restored database's history, a promoted
branch's old main), file by file, as stored (zstd). The target stores each at
the same place in its own repository, keeping its mtime (time targets read
it), and never over a file it has. The source's copy stays until its janitor
removes a branch's archive that no live branch needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from cygnet.agent import archive, pieces
from cygnet.agent.host import Host
from cygnet.agent.service import AgentService
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.wal import spool
from cygnet.wal.repo import WalRepository

log = logging.getLogger("cygnet.agent.moves")

SPOOL_WAIT = 10.0  # seconds for the source's last spooled segments to be archived
ARCHIVE_TIMEOUT = 3600.0


def database_branches(repo: WalRepository, database_id: str) -> list[str]:
    """The archive's branches that belong to the database, and those they continue."""
    return sorted({link.branch_id for branch in repo.branches()
                   for g in repo.generations(branch) if g.database_id == database_id
                   for link in repo.chain(branch, g.gen)})


async def _spool_drained(host: Host, branch_ids: list[str]) -> None:
    """Waits (briefly) until the stopped branches' last segments left the spool for
    the repository. (The segment open at the stop is the target's to archive.)"""
    root = archive.spool_root(host.config)
    deadline = time.monotonic() + SPOOL_WAIT
    while time.monotonic() < deadline:
        if not set(branch_ids) & set(spool.backlog(root)):
            return
        archive.poke()
        await asyncio.sleep(0.1)
    log.warning("archived WAL still spooled for %s after %.0fs; sent without it",
                ", ".join(branch_ids), SPOOL_WAIT)


async def send(service: AgentService, req: pb.SendMoveArchiveRequest
               ) -> AsyncIterator[pb.ArchiveChunk]:
    """SendMoveArchive (the source's side)."""
    host = service.host
    db_id = await service.database_id(req.database)
    db, _ = await service.read_database(db_id, snapshots=False)
    await _spool_drained(host, list(db.branches))
    repo = archive.repository(host.config)
    branches = await asyncio.to_thread(database_branches, repo, db_id)
    for branch in branches:
        for rel, path in await asyncio.to_thread(repo.files, branch):
            try:
                data = await asyncio.to_thread(path.read_bytes)
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue  # pruned meanwhile
            for piece, last in pieces.cut(data):
                yield pb.ArchiveChunk(path=rel, data=piece, last=last, mtime=mtime)


async def pull(host: Host, stub: Any, database_id: str) -> tuple[int, int]:
    """The target's side: stores what the source sends; returns (files, bytes) new here."""
    repo = archive.repository(host.config)
    files = size = 0
    stream = stub.SendMoveArchive(pb.SendMoveArchiveRequest(database=database_id),
                                  timeout=ARCHIVE_TIMEOUT)
    async for data, chunk in pieces.joined(stream, lambda c: c.path):
        if await asyncio.to_thread(repo.adopt, chunk.path, data, chunk.mtime):
            files += 1
            size += len(data)
    return files, size
