"""Heartbeats written to the store in batches: one transaction for all that arrived meanwhile.

At 10,000 hosts and a 10 s interval, 1,000 heartbeats a second arrive; one
transaction (and one fsync, one thread hop) each was most of the
coordinator's CPU. A heartbeat is queued; one writer task writes everything
queued in one UPDATE (SqlStore.heartbeats) while the next ones queue behind
it, and each is answered once its batch committed, with whether the host was
known (an unknown host gets NOT_FOUND and registers again). The writer waits
`GATHER` seconds after the first heartbeat of a batch, so a steady trickle (a
heartbeat every millisecond) makes one transaction and one thread hop per
gathering rather than one per heartbeat; a host that beats every few seconds
does not notice the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cygnet.coordinator.store.sql import SqlStore

log = logging.getLogger("cygnet.coordinator.heartbeats")

MAX_BATCH = 500
GATHER = 0.05

Beat = tuple[str, tuple[object, ...]]


class HeartbeatWriter:
    def __init__(self, store: SqlStore, gather: float = GATHER) -> None:
        self.store = store
        self.gather = gather
        self._queue: list[tuple[Beat, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def write(self, host_id: str, values: tuple[object, ...]) -> bool:
        """Records one heartbeat (SqlStore.heartbeat_values); False if the host is unknown."""
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._loop())
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(((host_id, values), fut))
        self._wake.set()
        return await fut

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            if self.gather:
                await asyncio.sleep(self.gather)
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Beat, asyncio.Future[bool]]]) -> None:
        # A host beating twice in one batch: its last heartbeat counts.
        latest = {host_id: values for (host_id, values), _ in batch}
        try:
            known = await asyncio.to_thread(self.store.heartbeats, list(latest.items()))
        except Exception as exc:  # the store's failure is every heartbeat's answer
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (host_id, _), fut in batch:
            if not fut.done():
                fut.set_result(host_id in known)
