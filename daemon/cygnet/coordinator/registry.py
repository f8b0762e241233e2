"""Hosts: registration, heartbeats, availability, drain, and the catalog taken from them.

A host that misses `missed_heartbeats` heartbeats is marked unavailable by the
leader; its next heartbeat makes it available again. The catalog of a host is
rebuilt from the host itself (ListDatabases, ListBranches) when it registers
and when a coordinator becomes leader, so a lost store is rebuilt as the
hosts come back: a heartbeat the coordinator does not know is answered
NOT_FOUND and the host registers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.coordinator.config import CoordinatorConfig
from cygnet.coordinator.heartbeats import HeartbeatWriter
from cygnet.coordinator.leadership import Leadership
from cygnet.coordinator.leases import HostLeases
from cygnet.coordinator.models import Capacity, CatalogEntry, Demand, HostRecord, Registration
from cygnet.coordinator.remote import AgentClients
from cygnet.coordinator.store.reserve import Fenced
from cygnet.coordinator.store.sql import SqlStore
from cygnet.errors import CygnetError, InvalidArgument, NotFound

log = logging.getLogger("cygnet.coordinator")

LIST_TIMEOUT = 30.0
# Catalog syncs in flight at once after taking the lead. Each one's first step
# (a channel, a call) runs before it awaits: ten thousand started together held
# the event loop for 5-7 s, and every placement and heartbeat waited behind them.
SYNC_CONCURRENCY = 32


class Registry:
    def __init__(self, store: SqlStore, config: CoordinatorConfig, clients: AgentClients) -> None:
        self.store = store
        self.config = config
        self.clients = clients
        self.leader = False
        self.leadership = Leadership(store, config.lease_ttl)
        self._syncs: set[asyncio.Task[None]] = set()
        self.beats = HeartbeatWriter(store)
        self.leases: HostLeases | None = None  # set when host leases are on (main.py)

    def budget(self, cap: Capacity) -> int:
        return int(cap.memory_bytes * self.config.memory_fraction)

    async def register(self, reg: Registration) -> HostRecord:
        if not reg.host_id:
            raise InvalidArgument("host_id", "must not be empty")
        if not reg.address:
            raise InvalidArgument("address", "must not be empty")
        max_clusters = reg.max_clusters or self.config.max_clusters
        host = await asyncio.to_thread(self.store.register, reg, self.budget(reg.capacity),
                                       max_clusters, time.time())
        log.info("host %s registered at %s (zone %r)", reg.host_id, reg.address, reg.zone)
        placer = self.leadership.active_placer()
        if placer is not None:
            await placer.refresh(reg.host_id)
        self._sync_soon(host)
        return host

    async def heartbeat(self, host_id: str, cap: Capacity) -> None:
        budget = self.budget(cap)
        known = await self.beats.write(host_id, self.store.heartbeat_values(cap, budget,
                                                                            time.time()))
        if not known:
            raise NotFound(f"host {host_id!r} is not registered")
        placer = self.leadership.active_placer()
        if placer is not None:
            placer.heartbeat(host_id, cap, budget)

    async def get(self, host_id: str) -> HostRecord:
        host = await asyncio.to_thread(self.store.get_host, host_id)
        if host is None:
            raise NotFound(f"host {host_id!r} not found")
        return host

    async def list(self) -> list[HostRecord]:
        return await asyncio.to_thread(self.store.list_hosts)

    async def drain(self, host_id: str, drained: bool) -> HostRecord:
        if not host_id:
            raise InvalidArgument("host_id", "must not be empty")
        host = await asyncio.to_thread(self.store.set_drained, host_id, drained)
        placer = self.leadership.active_placer()
        if placer is not None:
            placer.index.set_state(host_id, drained=drained)
        log.info("host %s %s", host_id, "drained" if drained else "undrained")
        return host

    # --- catalog from the hosts ------------------------------------------------

    def _sync_soon(self, *hosts: HostRecord, report: bool = False) -> None:
        task = asyncio.create_task(self.sync_hosts(hosts, report))
        self._syncs.add(task)
        task.add_done_callback(self._syncs.discard)

    async def sync_hosts(self, hosts: Sequence[HostRecord], report: bool = False) -> None:
        """sync_host for each of `hosts`, at most SYNC_CONCURRENCY at a time; with
        `report`, logs when all are done (a new leader's sync of the fleet)."""
        pending = iter(hosts)

        async def worker() -> None:
            for host in pending:
                try:
                    await self.sync_host(host)
                except Exception:
                    log.exception("catalog of host %s not refreshed", host.id)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(min(SYNC_CONCURRENCY, len(hosts)))))
        if report:
            log.info("catalog sync of %d hosts done in %.1f s", len(hosts),
                     time.monotonic() - started)

    async def sync_host(self, host: HostRecord) -> None:
        """Makes the catalog match what the host holds."""
        stub = self.clients.stub(host.address)
        try:
            dbs = await self.clients.call(host.id, stub.ListDatabases(
                apb.ListDatabasesRequest(), timeout=LIST_TIMEOUT))
            branches = await self.clients.call(host.id, stub.ListBranches(
                apb.ListBranchesRequest(), timeout=LIST_TIMEOUT))
        except CygnetError as exc:
            log.warning("catalog of host %s not refreshed: %s", host.id, exc)
            return
        # A copy a failover made stale is not the database, whatever the host says.
        lost = (await asyncio.to_thread(self.leases.lost_on, host.id)
                if self.leases is not None else set())
        entries = [entry_from_database(host.id, d) for d in dbs.databases
                   if d.id not in lost]
        ids = {b.id: b.database_id for b in branches.branches}
        await asyncio.to_thread(self.store.replace_host_catalog, host.id, entries, ids)
        placer = self.leadership.active_placer()
        if placer is not None:
            await placer.refresh(host.id)  # the host's real databases count in the index
        log.info("catalog of host %s: %d databases", host.id, len(entries))

    # --- leader housekeeping ---------------------------------------------------

    async def housekeeping(self, stop: asyncio.Event) -> None:
        """Leader only: silent hosts become unavailable, stale reservations go.

        The lease (leadership.py) decides who leads; this loop only follows it."""
        period = min(1.0, self.config.heartbeat_interval / 2)
        while not stop.is_set():
            try:
                await self._tick()
            except Exception:
                log.exception("housekeeping failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)

    async def _tick(self) -> None:
        leading = self.leadership.leading
        if leading != self.leader:
            log.info("%s leadership", "took" if leading else "lost")
            self.leader = leading
            if leading:
                self._sync_soon(*[h for h in await self.list() if h.available], report=True)
        if not leading:
            return
        now, epoch = time.time(), self.leadership.epoch
        try:
            # Fenced by the epoch, as the placements are: a paused old leader that
            # wakes writes nothing.
            stale = await asyncio.to_thread(self.store.mark_stale,
                                            now - self.config.stale_after, epoch)
            await asyncio.to_thread(self.store.expire_reservations, now, epoch)
        except Fenced:
            log.warning("housekeeping fenced: another coordinator leads now (epoch %d)", epoch)
            if self.leadership.placer is not None:
                self.leadership.placer.fenced = True
            return
        for host_id in stale:
            log.warning("host %s missed its heartbeats: unavailable", host_id)
            placer = self.leadership.active_placer()
            if placer is not None:
                placer.index.set_state(host_id, available=False)


def entry_from_database(host_id: str, d: apb.Database) -> CatalogEntry:
    demand = Demand.for_size(d.size_class)
    return CatalogEntry(d.id, d.name, host_id, demand.size_class, d.postgres_version, d.pool,
                        demand.memory_bytes, 0, created_at=d.created_at.ToNanoseconds() / 1e9,
                        main_branch_id=d.main_branch_id, branch_count=d.branch_count)
