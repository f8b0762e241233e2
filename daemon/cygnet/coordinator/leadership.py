"""Which coordinator leads: a lease in the store, renewed every second, and its epoch.

The lease is one row (store/reserve.py) timed by the store's own clock, so
coordinators on different machines need not agree on the time. A leader that
dies (kill -9) or is paused (SIGSTOP, a long GC, a frozen VM) stops renewing;
after `lease_ttl` another coordinator takes the lease with the next epoch.
Unlike a session advisory lock, which a paused process keeps forever, the
lease runs out. The paused leader may wake and still think it leads, but its
batched writes carry the old epoch and the store refuses them (the fence),
and its next renewal finds the epoch gone.

The leader places from its in-memory index (placer.py) and rebuilds the index
from the store now and then, to pick up what other coordinators changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time

from cygnet.coordinator.placer import Placer
from cygnet.coordinator.store.sql import SqlStore

log = logging.getLogger("cygnet.coordinator")


class Leadership:
    def __init__(self, store: SqlStore, ttl: float, reload_every: float = 60.0) -> None:
        self.store = store
        self.ttl = ttl
        self.reload_every = reload_every
        self.holder = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self.epoch = 0
        self.placer: Placer | None = None
        self._loaded_at = 0.0
        self._reload: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self.epoch > 0 and self.placer is not None and not self.placer.fenced

    def active_placer(self) -> Placer | None:
        return self.placer if self.leading else None

    async def run(self, stop: asyncio.Event) -> None:
        period = max(0.2, self.ttl / 3)
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # e.g. the store is down: we cannot know we lead
                log.warning("leadership check failed: %s", exc)
                await self._lose()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
        await self.resign()

    async def tick(self) -> None:
        epoch = await asyncio.to_thread(self.store.hold_lease, self.holder,
                                        0 if self.placer and self.placer.fenced else self.epoch,
                                        self.ttl)
        if epoch == self.epoch and self.placer is not None and not self.placer.fenced:
            if (time.monotonic() - self._loaded_at > self.reload_every
                    and (self._reload is None or self._reload.done())):
                # Beside the renewals, not in their way: at 10,000 hosts a rebuild takes
                # longer than the lease, which would then run out under a healthy leader.
                self._reload = asyncio.create_task(self._load(epoch))
            return
        await self._lose()
        if epoch:
            log.info("took leadership (epoch %d)", epoch)
            await self._load(epoch)

    async def _load(self, epoch: int) -> None:
        """A fresh index for `epoch`, swapped in whole once it is built."""
        placer = Placer(self.store, epoch)
        started = time.monotonic()
        await placer.load()
        if self._reload is not None and asyncio.current_task() is self._reload and (
                self.epoch != epoch or self.placer is None):
            await placer.close()  # the lead was lost while this index was built
            return
        old, self.placer, self.epoch = self.placer, placer, epoch
        log.info("placement index built in %.2f s", time.monotonic() - started)
        self._loaded_at = time.monotonic()
        if old is not None:
            # Shielded: a cancelled reload must still answer what the old index queued.
            await asyncio.shield(old.close(drain=True))

    async def _lose(self) -> None:
        if self._reload is not None and not self._reload.done():
            self._reload.cancel()
            await asyncio.gather(self._reload, return_exceptions=True)
        if self.placer is not None:
            log.info("lost leadership (epoch %d)", self.epoch)
            await self.placer.close()
        self.placer, self.epoch = None, 0

    async def resign(self) -> None:
        """On a clean stop the next coordinator need not wait for the lease to run out."""
        epoch = self.epoch
        await self._lose()
        if epoch:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.give_up_lease, self.holder, epoch)
