"""Moving databases between hosts at the coordinator (docs/ha.md, "Moving databases").

The coordinator checks the move (nothing changes on a refusal), asks the
target's agent to pull the database (MoveIn: zfs send rounds from agent to
agent; the data never passes through here), switches its catalog as soon as
main runs on the target, and has the source destroy its copy (EndMove). A
move that fails before main runs on the target has the source start the
database again. One move per database at a time; a drained host takes none.
Without a target host, placement picks one (`cygnet hosts drain --evacuate`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.coordinator.models import CatalogEntry, Constraints, HostRecord
from cygnet.coordinator.router import QUERY_TIMEOUT, Router
from cygnet.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger("cygnet.coordinator.moves")

MOVE_TIMEOUT = 24 * 3600.0  # the whole MoveIn stream; a broken stream fails sooner
END_TIMEOUT = 300.0


def _major(version: str) -> str:
    return version.split(".")[0]


class Moves:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.clients = router.clients
        self._moving: set[str] = set()  # database ids

    async def _target(self, to_host: str, entry: CatalogEntry, source: HostRecord
                      ) -> HostRecord:
        host = await asyncio.to_thread(self.router.store.get_host, to_host)
        if host is None:
            raise NotFound(f"host {to_host!r} not found")
        if host.id == source.id:
            raise FailedPrecondition(f"database {entry.name or entry.id} is on host "
                                     f"{host.id} already")
        if host.drained:
            raise FailedPrecondition(f"host {host.id} is drained: it takes no database "
                                     "(undrain it first); not moved, nothing changed")
        if not host.available:
            raise Unavailable(f"host {host.id} is unavailable")
        have = sorted({_major(v) for v in host.capacity.postgres_versions})
        if entry.postgres_version and _major(entry.postgres_version) not in have:
            raise InvalidArgument("to_host", f"host {host.id} has PostgreSQL "
                                  f"{', '.join(have) or 'none'}, not "
                                  f"{entry.postgres_version}, which database "
                                  f"{entry.name or entry.id} runs; not moved, nothing changed")
        return host

    async def _check_space(self, entry: CatalogEntry, source: HostRecord,
                           target: HostRecord) -> None:
        branches: apb.ListBranchesResponse = await self.clients.call(
            source.id, self.clients.stub(source.address).ListBranches(
                apb.ListBranchesRequest(database=entry.id), timeout=QUERY_TIMEOUT))
        need = sum(b.used_bytes for b in branches.branches)
        pool = target.capacity.best_pool
        free = pool.free_bytes if pool is not None else 0
        if free < need:
            raise ResourceExhausted(
                f"host {target.id} has {free // 2**20} MiB free, database "
                f"{entry.name or entry.id} uses {need // 2**20} MiB; not moved, nothing changed")

    async def move(self, database: str, to_host: str, request_id: str = ""
                   ) -> AsyncIterator[apb.MoveProgress]:
        """MoveDatabase: checks, then the target's progress, streamed."""
        loc, source = await self.router.live_host(database)
        entry = loc.entry
        if entry.id in self._moving:
            raise FailedPrecondition(f"database {entry.name or entry.id} is being moved "
                                     "already; not moved, nothing changed")
        self._moving.add(entry.id)
        try:
            if not to_host:  # placement picks (a drain's evacuation)
                placed = await self.router.place(entry.size_class, entry.postgres_version,
                                                 Constraints(avoid_databases=(entry.id,)),
                                                 dry_run=True)
                to_host = placed.choice.host_id
            target = await self._target(to_host, entry, source)
            await self._check_space(entry, source, target)
            async for progress in self._run(entry, source, target, request_id):
                yield progress
        finally:
            self._moving.discard(entry.id)

    async def _run(self, entry: CatalogEntry, source: HostRecord, target: HostRecord,
                   request_id: str) -> AsyncIterator[apb.MoveProgress]:
        log.info("moving database %s from %s to %s", entry.id, source.id, target.id)
        switched, heard = False, False
        stream = self.clients.stub(target.address).MoveIn(apb.MoveInRequest(
            database=entry.id, source_host_id=source.id, source_address=source.address,
            request_id=request_id), timeout=MOVE_TIMEOUT)
        try:
            async for progress in self._progress(target.id, stream):
                heard = True
                if progress.phase == "started" and not switched:
                    # Main runs on the target: clients find it there from now on.
                    await self._switch(entry, target)
                    switched = True
                    yield apb.MoveProgress(database_id=entry.id, phase="switch",
                                           host_id=target.id,
                                           message=f"the catalog places it on {target.id}")
                yield progress
        except BaseException:
            if not switched:
                stream.cancel()  # the target removes what it received
                await asyncio.shield(self._undo(source, target if heard else None, entry))
                raise
            log.exception("database %s runs on %s; the move's last steps failed", entry.id,
                          target.id)
        if not switched:  # a stream that ended without starting main is a failure
            await self._undo(source, target, entry)
            raise FailedPrecondition(f"the move of {entry.id} ended before main started")
        yield apb.MoveProgress(database_id=entry.id, phase="cleanup", host_id=source.id,
                               message=f"removing the copy on {source.id}")
        await self._end(source, entry, moved=True)
        yield apb.MoveProgress(database_id=entry.id, phase="moved", host_id=target.id,
                               message=f"database {entry.name or entry.id} is on {target.id}")

    async def _progress(self, host_id: str, stream: AsyncIterator[apb.MoveProgress]
                        ) -> AsyncIterator[apb.MoveProgress]:
        """The target's stream, its errors as domain errors naming the host."""
        async def items() -> AsyncIterator[apb.MoveProgress]:
            async for item in stream:
                yield item

        it = items().__aiter__()
        while True:
            try:
                item = await self.clients.call(host_id, it.__anext__())
            except StopAsyncIteration:
                return
            yield item

    async def _switch(self, entry: CatalogEntry, target: HostRecord) -> None:
        moved = dataclasses.replace(entry, host_id=target.id)
        await asyncio.to_thread(self.router.store.confirm, entry.id, moved)
        log.info("database %s: the catalog places it on %s", entry.id, target.id)

    async def _undo(self, source: HostRecord, target: HostRecord | None,
                    entry: CatalogEntry) -> None:
        """The database runs on the source again. A target that had started it already
        (its "started" not acted upon: the switch failed, or this call was cancelled)
        drops its copy first, so it never runs on both."""
        if target is None:  # the target never answered: it holds nothing
            await self._end(source, entry, moved=False)
            return
        try:
            await self.clients.call(target.id, self.clients.stub(target.address).DeleteDatabase(
                apb.DeleteDatabaseRequest(database=entry.id, override_protection=True),
                timeout=END_TIMEOUT))
            log.warning("database %s: the copy started on %s is dropped", entry.id, target.id)
        except NotFound:
            pass  # the usual case: the target removed what it received
        except Exception as exc:
            log.error("database %s: the target %s may hold a copy: %s", entry.id, target.id, exc)
        await self._end(source, entry, moved=False)

    async def _end(self, source: HostRecord, entry: CatalogEntry, *, moved: bool) -> None:
        try:
            await self.clients.call(source.id, self.clients.stub(source.address).EndMove(
                apb.EndMoveRequest(database=entry.id, moved=moved), timeout=END_TIMEOUT))
        except Exception as exc:
            what = "its copy stays there" if moved else "it may stay stopped there"
            log.error("database %s: EndMove on %s failed (%s): %s", entry.id, source.id, exc,
                      what)
