"""Migrations as the API offers them: wake the branch, rehearse on a clone, apply, record.

A rehearsal applies the pending migrations to a throwaway clone of the branch
(schema_instances.Instances: a snapshot, a clone, a server on 127.0.0.1),
reporting each one's time and the locks it held; only if every one passes do
they run on the branch itself. The clone is taken under the database's lock;
the migrations themselves run without it, as any client's SQL does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from cygnet.agent.schema_instances import Instances
from cygnet.agent.schema_service import Endpoint, SchemaService, connect
from cygnet.agent.service import BranchRef
from cygnet.errors import FailedPrecondition
from cygnet.migrate import run as M
from cygnet.migrate.files import Migration


@dataclass
class Outcome:
    branch: str
    rows: list[M.Row] = field(default_factory=list)
    rehearsal: list[M.Run] = field(default_factory=list)
    rehearsal_seconds: float = 0.0
    ran: list[M.Run] = field(default_factory=list)


def _apply(at: Endpoint, dbname: str, files: list[Migration]) -> list[M.Run]:
    with connect(at, dbname) as conn:
        return M.apply(conn, files)


def _rollback(at: Endpoint, dbname: str, files: list[Migration], to: int) -> list[M.Run]:
    with connect(at, dbname) as conn:
        return M.rollback(conn, files, to)


def _status(at: Endpoint, dbname: str, files: list[Migration]) -> list[M.Row]:
    with connect(at, dbname) as conn:
        return M.status(conn, files)


def carry_records(source: Endpoint, target: Endpoint, dbname: str) -> int:
    """After a schema merge: the source's migration records the target lacks, copied."""
    with connect(source, dbname) as src, connect(target, dbname) as dst:
        if not M.records(src):
            return 0
        return M.carry(src, dst, f"merge from {source.label}")


class Migrations:
    def __init__(self, schema: SchemaService) -> None:
        self.schema = schema
        self.agent = schema.agent

    async def status(self, ref: BranchRef, files: list[Migration], dbname: str) -> Outcome:
        at = await self.schema.live(ref)
        return Outcome(at.label, await asyncio.to_thread(_status, at, dbname, files))

    async def apply(self, ref: BranchRef, files: list[Migration], dbname: str,
                    rehearse: bool) -> Outcome:
        at = await self.schema.live(ref)
        out = Outcome(at.label)
        if rehearse:
            started = time.monotonic()
            try:
                out.rehearsal = await self._rehearse(ref, at, files, dbname)
            except FailedPrecondition as exc:
                raise FailedPrecondition(f"rehearsal on a throwaway clone of {at.label}: {exc}; "
                                         "nothing was applied to the branch") from exc
            out.rehearsal_seconds = time.monotonic() - started
        out.ran = await asyncio.to_thread(_apply, at, dbname, files)
        out.rows = await asyncio.to_thread(_status, at, dbname, files)
        return out

    async def rollback(self, ref: BranchRef, files: list[Migration], to: int, dbname: str
                       ) -> Outcome:
        at = await self.schema.live(ref)
        out = Outcome(at.label, ran=await asyncio.to_thread(_rollback, at, dbname, files, to))
        out.rows = await asyncio.to_thread(_status, at, dbname, files)
        return out

    async def _rehearse(self, ref: BranchRef, at: Endpoint, files: list[Migration],
                        dbname: str) -> list[M.Run]:
        db_id = await self.agent.database_id(ref)
        async with Instances(self.schema.host) as servers:
            async with self.schema.host.db_locks[db_id]:
                db, inv = await self.agent.read_database(db_id)
                _, branch = self.agent.resolve(inv, ref)
                clone = await servers.of_branch(db, branch)
            where = Endpoint(clone.socket_dir, clone.port, f"a clone of {at.label}")
            return await asyncio.to_thread(_apply, where, dbname, files)
