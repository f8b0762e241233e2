"""Automatic failover: the leader promotes a replica once a primary's host lease expired.

Each round (every `PERIOD` s, on the leader only, and never in its first
full lease TTL: a host may have renewed through the previous leader just
before it fell) looks for databases whose host's lease has expired. For
each, the most advanced healthy replica (a running standby with the largest
replay LSN, on a host whose own lease is alive) is chosen, the catalog
is switched to it with the lease checked under the host's row lock
(leases.take_over), and then it is promoted. The order matters: once the
catalog says the new host, the old one can never lift its fence. A promotion
that fails is retried by the next round (`failovers.promoted` = 0). The other
replicas then follow the new primary. The old primary stays fenced (its
Postgres refused writes since before the lease expired, native/fence) until
its host is back and it rejoins as a replica (coordinator/rejoin.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc
from grpc import aio

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.coordinator.leadership import Leadership
from cygnet.coordinator.leases import FailoverRecord, HostLeases
from cygnet.coordinator.models import CatalogEntry, HostRecord
from cygnet.coordinator.rejoin import Rejoins
from cygnet.coordinator.replicas import Replicas
from cygnet.wal.lsn import parse_lsn

log = logging.getLogger("cygnet.coordinator.failover")

PERIOD = 0.5
PROMOTE_TIMEOUT = 90.0
SWEEP_PERIOD = 30.0  # replicas of deleted databases whose host was away
# A replica in these states is not a running standby (a running one reports its
# walreceiver's status, which is not "streaming" once the primary has gone).
UNHEALTHY = ("stopped", "failed", "promoted", "starting")


def _lsn(replica: apb.Replica) -> int:
    try:
        return parse_lsn(replica.replay_lsn) if replica.replay_lsn else 0
    except Exception:
        return 0


def most_advanced(found: list[tuple[HostRecord, apb.Replica]], leases: HostLeases,
                  now: float) -> tuple[HostRecord, apb.Replica] | None:
    """The running standby that replayed the most WAL, on a host with a live lease;
    synchronous ones first at equal LSN (they hold every acknowledged commit)."""
    alive = [(h, r) for h, r in found
             if r.state not in UNHEALTHY and h.available and not leases.expired(h, now)]
    if not alive:
        return None
    return max(alive, key=lambda x: (_lsn(x[1]), x[1].synchronous, x[0].id))


class Failover:
    def __init__(self, replicas: Replicas, leases: HostLeases, leadership: Leadership,
                 period: float = PERIOD) -> None:
        self.replicas = replicas
        self.router = replicas.router
        self.leases = leases
        self.leadership = leadership
        self.period = period
        self._epoch = 0
        self._leading_since = 0.0
        self._said: set[str] = set()  # databases already reported as stuck
        self.rejoins = Rejoins(replicas, leases)
        self._next_sweep = 0.0
        self._sweep: asyncio.Task[None] | None = None

    def ready(self) -> bool:
        """Leading, and for a full host lease TTL already."""
        epoch = self.leadership.epoch if self.leadership.leading else 0
        if epoch != self._epoch:
            self._epoch, self._leading_since = epoch, time.monotonic()
        return bool(epoch) and time.monotonic() - self._leading_since >= self.leases.ttl

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self.ready():
                    await self.round()
            except Exception:
                log.exception("failover round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period)
        self.rejoins.stop()

    async def round(self) -> None:
        for rec in await asyncio.to_thread(self.leases.pending):
            await self._promote(rec)
        await self.rejoins.start_due()
        # Only databases with a replica can fail over (the others wait for their
        # host), so a fleet without replicas costs one small query per round.
        replicated = await asyncio.to_thread(self.replicas.hosts.replicated_databases)
        if not replicated:
            return
        if time.monotonic() >= self._next_sweep and (self._sweep is None or self._sweep.done()):
            # A task of its own: removing replicas never delays a failover.
            self._next_sweep = time.monotonic() + SWEEP_PERIOD
            self._sweep = asyncio.create_task(self.replicas.sweep(replicated))
        for db_id in sorted(replicated):
            entry = await asyncio.to_thread(self.router.store.get_entry, db_id)
            if entry is None:
                continue
            primary = await asyncio.to_thread(self.router.store.get_host, entry.host_id)
            if primary is not None and self.leases.expired(primary, time.time()):
                await self.fail_over(entry, primary)

    async def fail_over(self, entry: CatalogEntry, primary: HostRecord) -> bool:
        """Promotes a replica of `entry` in place of its primary on `primary`."""
        found = await self.replicas._replicas(entry.id, primary.id)
        if not found:
            return False  # no replica: the database waits for its host
        chosen = most_advanced(found, self.leases, time.time())
        if chosen is None:
            if entry.id not in self._said:
                self._said.add(entry.id)
                log.error("database %s: host %s lost its lease and no replica is healthy: "
                          "no failover", entry.id, primary.id)
            return False
        host, replica = chosen
        if not await self._prepare(entry.id, primary.id, host):
            return False
        taken = await asyncio.to_thread(self.leases.take_over, entry, host.id,
                                        self.leadership.epoch)
        if not taken:
            return False
        log.warning("database %s: host %s lost its lease; promoting the replica on %s "
                    "(replayed up to %s)", entry.id, primary.id, host.id, replica.replay_lsn)
        await asyncio.to_thread(self.replicas.hosts.remove, entry.id, host.id)
        rec = FailoverRecord(entry.id, primary.id, host.id, time.time(), False)
        if await self._promote(rec):
            others = [x for x in found if x[0].id != host.id]
            await self._follow(entry.id, host, others)
        return True

    async def _prepare(self, db_id: str, old_host: str, host: HostRecord) -> bool:
        """PrepareFailover on the chosen replica's host: refused while the old primary
        confirms itself there (failsafe, docs/ha.md); granted, that replica confirms
        it no more. An agent that predates the call counts as granted."""
        try:
            await self.router.clients.stub(host.address).PrepareFailover(
                apb.PrepareFailoverRequest(database=db_id, window_seconds=2 * self.leases.ttl),
                timeout=10)
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return True
            key = f"held:{db_id}"
            if key not in self._said:
                self._said.add(key)
                log.warning("database %s: host %s lost its lease, but the replica on %s "
                            "holds off the failover: %s", db_id, old_host, host.id,
                            exc.details())
            return False
        self._said.discard(f"held:{db_id}")
        return True

    async def _promote(self, rec: FailoverRecord) -> bool:
        host = await asyncio.to_thread(self.router.store.get_host, rec.to_host)
        if host is None:
            return False
        try:
            await self.router.clients.call(host.id, self.router.clients.stub(
                host.address).PromoteReplica(apb.PromoteReplicaRequest(database=rec.database_id),
                                             timeout=PROMOTE_TIMEOUT))
        except Exception as exc:
            if await self._already_primary(rec):
                return True
            log.error("database %s: promoting the replica on %s failed (retried): %s",
                      rec.database_id, host.id, exc)
            return False
        await asyncio.to_thread(self.leases.mark_promoted, rec.database_id)
        log.warning("database %s: failed over from %s to %s", rec.database_id, rec.from_host,
                    host.id)
        return True

    async def _already_primary(self, rec: FailoverRecord) -> bool:
        """A promotion whose answer was lost: the new host lists no replica any more."""
        host = await asyncio.to_thread(self.router.store.get_host, rec.to_host)
        if host is None:
            return False
        try:
            if await self.replicas.on_host(host, rec.database_id):
                return False
        except Exception:
            return False  # cannot tell: the next round tries the promotion again
        await asyncio.to_thread(self.leases.mark_promoted, rec.database_id)
        return True

    async def _follow(self, db_id: str, target: HostRecord,
                      others: list[tuple[HostRecord, apb.Replica]]) -> None:
        demote = apb.DemoteToReplicaRequest(database=db_id, primary_host_id=target.id,
                                            primary_address=target.address)
        for host, _ in others:
            try:
                await self.router.clients.call(host.id, self.router.clients.stub(
                    host.address).DemoteToReplica(demote, timeout=300))
            except Exception as exc:
                log.error("database %s: the replica on %s does not follow %s yet: %s",
                          db_id, host.id, target.id, exc)
