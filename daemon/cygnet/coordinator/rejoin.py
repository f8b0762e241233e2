"""The old primary of a failover rejoins as a replica once its host is back.

Each failover records the old host's copy in `lost_copies` (leases.py). When
that host heartbeats again (its lease is alive) and the database's current
primary is promoted, the leader asks the host to rewind its fenced copy and
follow that primary (DemoteToReplica with `rewind`, agent/rejoin.py). On
success the host is recorded as a replica holder and the lost copy is
forgotten: nothing stale is left to guard. A host that no longer holds the
copy (removed by hand) also ends it. Anything else is retried with a growing
pause, and never blocks the failover round: each rejoin runs as its own task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.coordinator.leases import HostLeases
from cygnet.coordinator.models import HostRecord
from cygnet.coordinator.replicas import Replicas
from cygnet.errors import NotFound

log = logging.getLogger("cygnet.coordinator.rejoin")

REJOIN_TIMEOUT = 1800.0  # pg_rewind of a large database
FIRST_PAUSE, LONGEST_PAUSE = 10.0, 600.0


class Rejoins:
    def __init__(self, replicas: Replicas, leases: HostLeases) -> None:
        self.replicas = replicas
        self.store = replicas.router.store
        self.clients = replicas.router.clients
        self.leases = leases
        self._running: dict[str, asyncio.Task[None]] = {}
        self._next_try: dict[str, tuple[float, float]] = {}  # db -> (when, pause)

    async def start_due(self) -> None:
        """Starts a rejoin for each lost copy whose host is back."""
        now = time.monotonic()
        pending = {r.database_id for r in await asyncio.to_thread(self.leases.pending)}
        for db_id, host_id in await asyncio.to_thread(self.leases.lost_copies):
            key = f"{db_id}/{host_id}"
            if db_id in pending or key in self._running:
                continue  # a promotion to finish first, or a rejoin under way
            if self._next_try.get(key, (0.0, 0.0))[0] > now:
                continue
            old = await asyncio.to_thread(self.store.get_host, host_id)
            if old is None or not old.available or self.leases.expired(old):
                continue
            entry = await asyncio.to_thread(self.store.get_entry, db_id)
            if entry is None or entry.host_id == host_id:
                continue
            task = asyncio.create_task(self._rejoin(db_id, old, entry.host_id))
            self._running[key] = task
            task.add_done_callback(functools.partial(self._done, key))

    def _done(self, key: str, _: asyncio.Task[None]) -> None:
        self._running.pop(key, None)

    def stop(self) -> None:
        for task in list(self._running.values()):
            task.cancel()

    async def _rejoin(self, db_id: str, old: HostRecord, primary_id: str) -> None:
        key = f"{db_id}/{old.id}"
        new = await asyncio.to_thread(self.store.get_host, primary_id)
        if new is None:
            return
        req = apb.DemoteToReplicaRequest(database=db_id, primary_host_id=new.id,
                                         primary_address=new.address, rewind=True)
        log.warning("database %s: host %s is back; its old primary rejoins as a replica of %s",
                    db_id, old.id, new.id)
        try:
            await self.clients.call(old.id, self.clients.stub(old.address).DemoteToReplica(
                req, timeout=REJOIN_TIMEOUT))
        except NotFound:
            log.warning("database %s: host %s no longer holds its old primary", db_id, old.id)
            await asyncio.to_thread(self.leases.forget_copy, db_id, old.id)
            return
        except Exception as exc:
            _, pause = self._next_try.get(key, (0.0, FIRST_PAUSE / 2))
            pause = min(pause * 2, LONGEST_PAUSE)
            self._next_try[key] = (time.monotonic() + pause, pause)
            log.error("database %s: the old primary on %s did not rejoin (retried in %.0fs): "
                      "%s", db_id, old.id, pause, exc)
            return
        self._next_try.pop(key, None)
        await asyncio.to_thread(self.replicas.hosts.add, db_id, old.id)
        await asyncio.to_thread(self.leases.forget_copy, db_id, old.id)
        log.warning("database %s: the old primary on %s follows %s", db_id, old.id, new.id)
