"""Replicas at the coordinator: where they go, which host to ask, and the switchover's order.

The coordinator records only which hosts hold a replica of which database
(replica_hosts.py), so that it asks those hosts alone; each host reports its
own replicas (ListReplicas), and the primary reports their slots and lag
(GetBranch of main). What it decides is the host of a new replica (explicit, or placement
with the primary's host avoided) and, for a planned switchover, the order of
the agents' steps (agent/switchover.py) and the catalog switch between them.
The seed stream itself goes from agent to agent, never through here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from google.protobuf.duration_pb2 import Duration

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as pb
from cygnet.coordinator.models import Constraints, HostRecord
from cygnet.coordinator.replica_hosts import ReplicaHosts
from cygnet.coordinator.router import QUERY_TIMEOUT, Router
from cygnet.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

log = logging.getLogger("cygnet.coordinator.replicas")

DEFAULT_MAX_LAG = 16 * 2**20


class Replicas:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.clients = router.clients
        self.hosts = ReplicaHosts(router.store)

    async def _hosts(self) -> list[HostRecord]:
        return await asyncio.to_thread(self.router.store.list_hosts)

    async def _target(self, req: pb.FleetCreateReplicaRequest, primary: HostRecord,
                      size: str, version: str, db_id: str) -> HostRecord:
        if req.host_id:
            if req.host_id == primary.id:
                raise FailedPrecondition(f"a replica on the primary's own host ({primary.id}) "
                                         "is refused: it would fail with it")
            host = await asyncio.to_thread(self.router.store.get_host, req.host_id)
            if host is None:
                raise NotFound(f"host {req.host_id!r} not found")
            if not host.available:
                raise Unavailable(f"host {host.id} is unavailable")
            return host
        placed = await self.router.place(size, version, Constraints(avoid_databases=(db_id,)),
                                         dry_run=True)
        return await self.router._host(placed.choice.host_id)

    async def create(self, req: pb.FleetCreateReplicaRequest) -> apb.Replica:
        loc, primary = await self.router.live_host(req.database)
        entry = loc.entry
        target = await self._target(req, primary, entry.size_class, entry.postgres_version,
                                    entry.id)
        forward = apb.CreateReplicaRequest(
            database=entry.id, primary_host_id=primary.id, primary_address=primary.address,
            synchronous=req.synchronous, request_id=req.request_id)
        # Recorded first: a replica whose answer is lost is still asked about.
        await asyncio.to_thread(self.hosts.add, entry.id, target.id)
        result: apb.Replica = await self.clients.call(target.id, self.clients.stub(
            target.address).CreateReplica(forward, timeout=self.router.config.agent_timeout))
        return result

    async def _replicas(self, db_id: str, primary_id: str) -> list[tuple[HostRecord,
                                                                          apb.Replica]]:
        """The database's replicas, from the available hosts recorded as holding one
        (hosts that fail are skipped)."""
        recorded = await asyncio.to_thread(self.hosts.of, db_id)
        if not recorded:
            return []
        hosts = [h for h in await self._hosts()
                 if h.id in recorded and h.available and h.id != primary_id]

        async def one(h: HostRecord) -> list[tuple[HostRecord, apb.Replica]]:
            try:
                return [(h, r) for r in await self.on_host(h, db_id)]
            except Exception as exc:
                log.warning("replicas of %s on %s not listed: %s", db_id, h.id, exc)
                return []

        found = await asyncio.gather(*(one(h) for h in hosts))
        return [x for xs in found for x in xs]

    async def on_host(self, host: HostRecord, db_id: str) -> list[apb.Replica]:
        """What `host` itself says of its replicas of the database."""
        resp = await self.clients.call(host.id, self.clients.stub(host.address).ListReplicas(
            apb.ListReplicasRequest(database=db_id), timeout=QUERY_TIMEOUT))
        return list(resp.replicas)

    async def list_replicas(self, req: pb.FleetListReplicasRequest) -> apb.ListReplicasResponse:
        loc, primary = await self.router.live_host(req.database)
        return apb.ListReplicasResponse(
            replicas=[r for _, r in await self._replicas(loc.entry.id, primary.id)])

    async def delete(self, req: pb.FleetDeleteReplicaRequest) -> apb.DeleteReplicaResponse:
        loc = await self.router.locate(req.database)
        if not req.host_id:
            raise InvalidArgument("host_id", "name the replica's host")
        if req.host_id == loc.entry.host_id:
            raise FailedPrecondition(f"host {req.host_id} holds the primary, not a replica")
        host = await self.router._host(req.host_id)
        result: apb.DeleteReplicaResponse = await self.clients.call(
            host.id, self.clients.stub(host.address).DeleteReplica(apb.DeleteReplicaRequest(
                database=loc.entry.id, request_id=req.request_id),
                timeout=self.router.config.agent_timeout))
        await asyncio.to_thread(self.hosts.remove, loc.entry.id, host.id)
        return result

    async def delete_all(self, db_id: str, *, reachable_only: bool = False) -> list[str]:
        """Removes every recorded replica of a database being deleted; returns the hosts
        that could not be reached (their record stays, for `sweep`)."""
        left = []
        for host_id in sorted(await asyncio.to_thread(self.hosts.of, db_id)):
            host = await asyncio.to_thread(self.router.store.get_host, host_id)
            if reachable_only and (host is None or not host.available):
                left.append(host_id)
                continue
            try:
                if host is not None:
                    await self.clients.call(host.id, self.clients.stub(host.address)
                                            .DeleteReplica(apb.DeleteReplicaRequest(
                                                database=db_id),
                                                timeout=self.router.config.agent_timeout))
            except NotFound:
                pass  # nothing there: the record was stale
            except Exception as exc:
                log.warning("database %s: its replica on %s was not removed yet: %s",
                            db_id, host_id, exc)
                left.append(host_id)
                continue
            await asyncio.to_thread(self.hosts.remove, db_id, host_id)
        return left

    async def sweep(self, replicated: set[str]) -> None:
        """Replicas of databases deleted while their host was away go once it is back."""
        for db_id in sorted(replicated):
            if await asyncio.to_thread(self.router.store.get_entry, db_id) is None:
                await self.delete_all(db_id, reachable_only=True)

    async def _choose(self, req: pb.FleetPromoteReplicaRequest, db_id: str,
                      primary: HostRecord) -> tuple[HostRecord, apb.Replica,
                                                    list[tuple[HostRecord, apb.Replica]]]:
        if req.host_id == primary.id:
            raise FailedPrecondition(f"host {primary.id} holds the primary already")
        found = await self._replicas(db_id, primary.id)
        if req.host_id:
            chosen = [x for x in found if x[0].id == req.host_id]
            if not chosen:
                raise NotFound(f"host {req.host_id} holds no replica of {req.database}")
        else:
            chosen = sorted(found, key=lambda x: x[1].lag_bytes)
            if not chosen:
                raise FailedPrecondition(f"database {req.database} has no replica")
        host, replica = chosen[0]
        limit = req.max_lag_bytes or DEFAULT_MAX_LAG
        if not req.force:
            if replica.state != "streaming":
                raise FailedPrecondition(f"the replica on {host.id} is {replica.state}, not "
                                         "streaming: refused (force overrides), nothing changed")
            if replica.lag_bytes > limit:
                raise FailedPrecondition(
                    f"the replica on {host.id} lags {replica.lag_bytes} bytes, more than "
                    f"{limit}: refused (force overrides), nothing changed")
        return host, replica, [x for x in found if x[0].id != host.id]

    async def switchover(self, req: pb.FleetPromoteReplicaRequest) -> pb.SwitchoverResponse:
        loc, primary = await self.router.live_host(req.database)
        entry = loc.entry
        target, _, others = await self._choose(req, entry.id, primary)
        old = self.clients.stub(primary.address)
        started = time.monotonic()
        hand: apb.HandOverPrimaryResponse = await self.clients.call(primary.id, old.HandOverPrimary(
            apb.HandOverPrimaryRequest(database=entry.id), timeout=120))
        try:
            promoted: apb.Replica = await self.clients.call(target.id, self.clients.stub(
                target.address).PromoteReplica(apb.PromoteReplicaRequest(
                    database=entry.id, min_lsn=hand.stop_lsn), timeout=120))
        except Exception as exc:
            await self._undo_hand_over(entry.id, primary, target, exc)
            raise
        downtime = time.monotonic() - started
        moved = dataclasses.replace(entry, host_id=target.id)
        await asyncio.to_thread(self.router.store.confirm, entry.id, moved)
        await asyncio.to_thread(self.hosts.remove, entry.id, target.id)
        log.info("database %s: %s took over from %s at %s (%.3fs without a primary)",
                 entry.id, target.id, primary.id, hand.stop_lsn, downtime)
        out = pb.SwitchoverResponse(
            new_primary=promoted, old_primary_host_id=primary.id, stop_lsn=hand.stop_lsn,
            downtime=Duration(seconds=int(downtime), nanos=int(downtime % 1 * 1e9)))
        await self._follow(out, entry.id, target, primary, others, req.remove_old_primary)
        return out

    async def _undo_hand_over(self, db_id: str, primary: HostRecord, target: HostRecord,
                              exc: Exception) -> None:
        """The old primary starts again only if the replica surely was not promoted
        (it still answers as a standby): never two primaries. Otherwise the
        database stays without a primary, and the error says so."""
        try:
            standby = any(r.state not in ("promoted", "failed", "stopped")
                          for r in await self.on_host(target, db_id))
        except Exception as check:
            log.error("switchover of %s: the replica on %s cannot say whether it was "
                      "promoted (%s)", db_id, target.id, check)
            standby = False
        if not standby:
            raise FailedPrecondition(
                f"the switchover of {db_id} failed ({exc}) and the replica on {target.id} may "
                f"have been promoted: the old primary on {primary.id} stays stopped; check "
                f"{target.id} before starting it (never two primaries)") from exc
        log.warning("switchover of %s failed (%s); the replica is still a standby: "
                    "restarting the primary on %s", db_id, exc, primary.id)
        await self.clients.call(primary.id, self.clients.stub(primary.address).StartBranch(
            apb.StartBranchRequest(branch=apb.BranchRef(database=db_id, name="main")),
            timeout=120))

    async def _follow(self, out: pb.SwitchoverResponse, db_id: str, target: HostRecord,
                      primary: HostRecord, others: list[tuple[HostRecord, apb.Replica]],
                      remove_old: bool) -> None:
        """The old primary and the other replicas follow the new primary (best effort:
        the switchover is done; what fails here is said in the answer and the log)."""
        demote = apb.DemoteToReplicaRequest(database=db_id, primary_host_id=target.id,
                                            primary_address=target.address)
        if remove_old:
            await self.clients.call(primary.id, self.clients.stub(primary.address).DeleteDatabase(
                apb.DeleteDatabaseRequest(database=db_id), timeout=120))
            out.old_primary_message = "removed"
        else:
            try:
                # Recorded first, as a new replica is.
                await asyncio.to_thread(self.hosts.add, db_id, primary.id)
                out.old_primary.CopyFrom(await self.clients.call(primary.id, self.clients.stub(
                    primary.address).DemoteToReplica(demote, timeout=300)))
            except Exception as exc:
                out.old_primary_message = f"left stopped: {exc}"
                log.error("database %s: the old primary on %s did not become a replica: %s",
                          db_id, primary.id, exc)
        for host, _ in others:
            try:
                await self.clients.call(host.id, self.clients.stub(host.address).DemoteToReplica(
                    demote, timeout=300))
            except Exception as exc:
                log.error("database %s: the replica on %s still follows %s: %s", db_id, host.id,
                          primary.id, exc)
