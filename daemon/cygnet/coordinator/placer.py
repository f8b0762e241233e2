"""The leader's placement: choose from the in-memory index, reserve by group commit.

Placements choose a host from the PlacementIndex at once (no store round
trip), count the reservation in the index, and queue it. One writer task
commits everything queued in one store transaction (store/reserve.py) while
the next placements queue up behind it: under load a batch carries tens of
placements for the price of one commit. Each placement is answered only after
its batch committed, so the reservation is durable before the reply.

A placement the store refuses because the host filled up meanwhile (another
coordinator placed there) refreshes that host from the store and is chosen
again. A batch refused by the fence (another coordinator took the lead) is
answered UNAVAILABLE and this coordinator stops placing from its index.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from collections.abc import Sequence

from cygnet.coordinator import scoring
from cygnet.coordinator.index import IndexedHost, PlacementIndex
from cygnet.coordinator.models import Capacity, PlaceRequest
from cygnet.coordinator.store import reserve
from cygnet.coordinator.store.sql import SqlStore, entry_values
from cygnet.errors import AlreadyExists, Unavailable

log = logging.getLogger("cygnet.coordinator.placer")

MAX_BATCH = 500
LOAD_SLICE = 200
RETRIES = 5

Pending = tuple[reserve.Item, "asyncio.Future[str]"]


def indexed(row: Sequence[object]) -> IndexedHost:
    r = list(row)
    return IndexedHost(
        id=str(r[0]), address=str(r[1]), zone=str(r[2]), versions=tuple(str(r[3]).split()),
        labels=reserve.labels_of(tuple(row)), memory_budget=int(str(r[5])),
        memory_reserved=int(str(r[6])), db_count=int(str(r[7])),
        running_clusters=int(str(r[8])), max_clusters=int(str(r[9])),
        disk_free=int(str(r[10])), disk_size=int(str(r[11])), pending_disk=int(str(r[12])),
        available=bool(int(str(r[13]))), drained=bool(int(str(r[14]))))


class Placer:
    """Placement from the index for one leadership epoch."""

    def __init__(self, store: SqlStore, epoch: int) -> None:
        self.store = store
        self.epoch = epoch
        self.index = PlacementIndex()
        self.fenced = False
        self._closed = False
        self._queue: list[Pending] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def load(self) -> None:
        hosts, groups = await asyncio.to_thread(self.store.index_rows)
        index = PlacementIndex()
        # Built on the loop in slices: a thread would hold the GIL against the
        # placements going on meanwhile (seconds at 10,000 hosts).
        for start in range(0, len(hosts), LOAD_SLICE):
            for row in hosts[start:start + LOAD_SLICE]:
                index.put(indexed(row))
            await asyncio.sleep(0)
        for group, host_id in groups:
            index.add_group(str(group), str(host_id))
        self.index = index
        # Hundreds of thousands of long-lived objects (heap entries, hosts): out of
        # the cyclic collector's reach, or a full collection stalls placements.
        gc.freeze()
        self._writer = asyncio.create_task(self._write_loop())
        log.info("placement index loaded: %d hosts (epoch %d)", len(index.hosts), self.epoch)

    async def close(self, drain: bool = False) -> None:
        """Stops placing; with `drain`, what is queued is committed first."""
        self._closed = True
        if drain:
            self._wake.set()
        if self._writer is not None:
            if not drain:
                self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(Unavailable("the coordinator stopped placing; retry"))
        self._queue.clear()

    # --- keeping the index current -------------------------------------------------

    async def refresh(self, host_id: str) -> None:
        hosts, groups = await asyncio.to_thread(self.store.index_rows, host_id)
        for row in hosts:
            self.index.put(indexed(row))
        for group, gid in groups:
            self.index.add_group(str(group), str(gid))

    def heartbeat(self, host_id: str, cap: Capacity, memory_budget: int) -> None:
        """What a heartbeat wrote to the store (SqlStore.heartbeat), in the index."""
        h = self.index.hosts.get(host_id)
        if h is None:
            return
        pool = cap.best_pool
        new = dataclasses.replace(
            h, memory_budget=memory_budget, running_clusters=cap.running_clusters,
            disk_free=pool.free_bytes if pool else 0, disk_size=pool.size_bytes if pool else 0,
            pending_disk=0, versions=tuple(cap.postgres_versions), available=True)
        if new != h:
            # Unchanged capacity (the common heartbeat) costs no heap work.
            self.index.put(new)

    # --- placing ------------------------------------------------------------------------

    async def place(self, req: PlaceRequest, excluded: set[str]
                    ) -> tuple[scoring.Choice, str]:
        """The choice and its reservation id (an earlier one for a retried request id)."""
        for _ in range(RETRIES):
            choice = self.index.choose(req.demand, req.version, req.constraints, excluded)
            if req.reservation is None:
                return choice, ""
            group = req.constraints.anti_affinity_group
            self.index.adjust(choice.host_id, req.demand, +1, group)
            values = list(entry_values(req.reservation))
            values[2] = choice.host_id
            item = reserve.Item(tuple(values), choice.host_id, req.demand.memory_bytes,
                                req.demand.disk_bytes)
            outcome = await self._submit(item)
            if outcome == reserve.OK:
                return choice, req.reservation.id
            self.index.adjust(choice.host_id, req.demand, -1)
            if outcome.startswith(reserve.RETRY):
                _, first, host = outcome.split(" ", 2)
                return scoring.Choice(host, "", 1.0, "retry of an earlier request", 0, 0), first
            if outcome == reserve.EXISTS:
                raise AlreadyExists(f"database {req.reservation.name!r} exists already")
            await self.refresh(choice.host_id)
        raise Unavailable("placement kept losing its host to concurrent placements; retry")

    async def _submit(self, item: reserve.Item) -> str:
        if self.fenced:
            raise reserve.Fenced("this coordinator is no longer the leader; retry the request")
        if self._closed:
            raise Unavailable("the placement index is being rebuilt; retry the request")
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        self._wake.set()
        return await fut

    async def _write_loop(self) -> None:
        while not self._closed or self._queue:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._commit(batch)

    async def _commit(self, batch: list[Pending]) -> None:
        try:
            outcomes = await asyncio.to_thread(self.store.commit_batch, self.epoch,
                                               [item for item, _ in batch])
        except Exception as exc:  # the store's failure is every placement's answer
            if isinstance(exc, reserve.Fenced):
                self.fenced = True
                log.warning("fenced: another coordinator leads now (epoch %d)", self.epoch)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), outcome in zip(batch, outcomes, strict=True):
            if not fut.done():
                fut.set_result(outcome)
