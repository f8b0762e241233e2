"""Moving databases between hosts at the coordinator (docs/ha.md, "Moving databases").

The coordinator checks the move (nothing changes on a refusal), asks the
target's agent to pull the database (MoveIn: zfs send rounds from agent to
agent; the data never passes through here), switches its catalog as soon as
main runs on the target, and has the source destroy its copy (EndMove). A
move that fails before main runs on the target has the source start the
database again. One move per database at a time, across every coordinator (a
row in the `moves` table, move_journal.py); a drained host takes none.
Without a target host, placement picks one (`cygnet hosts drain --evacuate`).

A coordinator that dies mid-move stops renewing that row. The leader then
finishes the move from its catalog (`recover`): a database the catalog had
switched to the target has its source copy removed; any other runs on the
source again, after the target drops what it may have started.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.coordinator.models import CatalogEntry, Constraints, HostRecord
from cygnet.coordinator.move_journal import MoveJournal, MoveRecord
from cygnet.coordinator.router import QUERY_TIMEOUT, Router
from cygnet.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger("cygnet.coordinator.moves")

MOVE_TIMEOUT = 24 * 3600.0  # the whole MoveIn stream; a broken stream fails sooner
END_TIMEOUT = 300.0
RENEW_EVERY = 3.0  # the running move's row in the journal; the setting
# move_orphaned_after (30 s) says when an unrenewed row has lost its coordinator.
RECOVER_EVERY = 5.0
# Tests: the coordinator exits at "started" (before its catalog switch) or at "switched".
EXIT_AT_ENV = "CYGNET_TEST_COORDINATOR_EXIT_AT"


def _major(version: str) -> str:
    return version.split(".")[0]


class Moves:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.clients = router.clients
        self.journal = MoveJournal(router.store)
        self.holder = (router.leadership.holder if router.leadership is not None
                       else f"coordinator/{os.getpid()}")
        self._moving: set[str] = set()  # database ids this coordinator moves now
        self._said: set[str] = set()  # unfinished moves already reported as stuck
        self.orphaned_after = router.config.move_orphaned_after

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
            await self._begin(entry, source, target)
            renewing = asyncio.create_task(self._renew(entry.id))
            try:
                async for progress in self._run(entry, source, target, request_id):
                    yield progress
            finally:
                renewing.cancel()
        finally:
            self._moving.discard(entry.id)

    async def _begin(self, entry: CatalogEntry, source: HostRecord, target: HostRecord
                     ) -> None:
        held = await asyncio.to_thread(self.journal.begin, entry.id, source.id, target.id,
                                       self.holder)
        if held is None:
            return
        what = ("is being moved already" if held.age < self.orphaned_after
                else "has an unfinished move that the coordinator finishes first")
        raise FailedPrecondition(f"database {entry.name or entry.id} {what} (from "
                                 f"{held.from_host} to {held.to_host}); not moved, nothing "
                                 "changed")

    async def _renew(self, database_id: str) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            with contextlib.suppress(Exception):  # a store hiccup: the next renewal
                await asyncio.to_thread(self.journal.renew, database_id, self.holder)

    async def _done(self, database_id: str) -> None:
        """The source knows how the move ended: its row goes."""
        await asyncio.shield(asyncio.to_thread(self.journal.finish, database_id, self.holder))

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
                    _exit_if("started")
                    # Main runs on the target: clients find it there from now on.
                    await self._switch(entry, target)
                    switched = True
                    _exit_if("switched")
                    yield apb.MoveProgress(database_id=entry.id, phase="switch",
                                           host_id=target.id,
                                           message=f"the catalog places it on {target.id}")
                yield progress
        except BaseException:
            if not switched:
                stream.cancel()  # the target removes what it received
                if await asyncio.shield(self._undo(source, target if heard else None, entry)):
                    await self._done(entry.id)
                raise
            log.exception("database %s runs on %s; the move's last steps failed", entry.id,
                          target.id)
        if not switched:  # a stream that ended without starting main is a failure
            if await self._undo(source, target, entry):
                await self._done(entry.id)
            raise FailedPrecondition(f"the move of {entry.id} ended before main started")
        yield apb.MoveProgress(database_id=entry.id, phase="cleanup", host_id=source.id,
                               message=f"removing the copy on {source.id}")
        if await self._end(source, entry, moved=True):
            await self._done(entry.id)
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
        if not await asyncio.to_thread(self.journal.renew, entry.id, self.holder):
            # Unrenewed too long (a store outage): the leader finishes it as a failure.
            raise Aborted(f"the move of {entry.id} was taken over before its catalog switch")
        moved = dataclasses.replace(entry, host_id=target.id)
        await asyncio.to_thread(self.router.store.confirm, entry.id, moved)
        log.info("database %s: the catalog places it on %s", entry.id, target.id)

    async def _undo(self, source: HostRecord, target: HostRecord | None,
                    entry: CatalogEntry) -> bool:
        """The database runs on the source again. A target that had started it already
        (its "started" not acted upon: the switch failed, or this call was cancelled)
        drops its copy first, so it never runs on both. True once the source knows."""
        if target is None:  # the target never answered: it holds nothing
            return await self._end(source, entry, moved=False)
        try:
            # EndMove (moved) drops a host's copy of a moving database, protected or
            # not; DeleteDatabase would need an admin's override for a protected one.
            await self.clients.call(target.id, self.clients.stub(target.address).EndMove(
                apb.EndMoveRequest(database=entry.id, moved=True), timeout=END_TIMEOUT))
            log.warning("database %s: the copy started on %s is dropped", entry.id, target.id)
        except NotFound:
            pass  # the usual case: the target removed what it received
        except Exception as exc:
            # Never restart the source while the target may run it: retried later.
            log.error("database %s: the target %s may hold a copy: %s", entry.id, target.id, exc)
            return False
        return await self._end(source, entry, moved=False)

    async def _end(self, source: HostRecord, entry: CatalogEntry, *, moved: bool) -> bool:
        try:
            await self.clients.call(source.id, self.clients.stub(source.address).EndMove(
                apb.EndMoveRequest(database=entry.id, moved=moved), timeout=END_TIMEOUT))
            return True
        except NotFound:
            return True  # the source holds no copy (any more)
        except Exception as exc:
            what = "its copy stays there" if moved else "it may stay stopped there"
            log.error("database %s: EndMove on %s failed (%s): %s; the coordinator tries "
                      "again", entry.id, source.id, exc, what)
            return False

    # --- moves whose coordinator went away ---------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """The leader finishes unfinished moves, every RECOVER_EVERY seconds."""
        while not stop.is_set():
            leadership = self.router.leadership
            try:
                if leadership is None or leadership.leading:
                    await self.recover()
            except Exception:
                log.exception("finishing unfinished moves failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RECOVER_EVERY)

    async def recover(self) -> list[str]:
        """Finishes each move nobody renewed for `move_orphaned_after`; returns their
        databases."""
        finished = []
        for rec in await asyncio.to_thread(self.journal.stale, self.orphaned_after):
            if rec.database_id in self._moving or not await asyncio.to_thread(
                    self.journal.take, rec.database_id, self.holder, self.orphaned_after):
                continue
            if await self._finish(rec):
                await self._done(rec.database_id)
                self._said.discard(rec.database_id)
                finished.append(rec.database_id)
            elif rec.database_id not in self._said:  # its row is retried once stale again
                self._said.add(rec.database_id)
                log.error("database %s: its unfinished move from %s to %s could not be "
                          "finished yet", rec.database_id, rec.from_host, rec.to_host)
        return finished

    async def _finish(self, rec: MoveRecord) -> bool:
        """What the catalog says decides: switched to the target, the source's copy goes;
        still on the source, it runs there again (the target drops its copy first)."""
        store = self.router.store
        entry = await asyncio.to_thread(store.get_entry, rec.database_id)
        source = await asyncio.to_thread(store.get_host, rec.from_host)
        if entry is None or source is None:
            return True  # deleted meanwhile: nothing is left to finish
        target = await asyncio.to_thread(store.get_host, rec.to_host)
        if entry.host_id == rec.to_host:
            log.warning("database %s: its move to %s was left unfinished; removing the copy "
                        "on %s", entry.id, rec.to_host, source.id)
            return await self._end(source, entry, moved=True)
        if entry.host_id != rec.from_host:
            return True  # a failover placed it elsewhere since: not this move's to undo
        log.warning("database %s: its move to %s was left unfinished; it runs on %s again",
                    entry.id, rec.to_host, source.id)
        return await self._undo(source, target, entry)


def _exit_if(point: str) -> None:
    if os.environ.get(EXIT_AT_ENV) == point:
        log.warning("exiting at %r (%s)", point, EXIT_AT_ENV)
        os._exit(70)
