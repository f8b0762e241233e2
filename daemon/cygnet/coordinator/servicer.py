"""The gRPC servicer: thin. It converts messages and calls the registry and the router."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as pb
from cygnet.api.v1 import coordinator_pb2_grpc as pb_grpc
from cygnet.coordinator import convert
from cygnet.coordinator.auth import host_refusal
from cygnet.coordinator.leases import HostLeases
from cygnet.coordinator.moves import Moves
from cygnet.coordinator.registry import Registry
from cygnet.coordinator.replicas import Replicas
from cygnet.coordinator.router import Router

Ctx = Any  # grpc.aio.ServicerContext


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, registry: Registry, router: Router) -> None:
        self.registry = registry
        self.router = router
        self.replicas = Replicas(router)  # docs/ha.md
        self.moves = Moves(router)  # docs/ha.md, "Moving databases"
        self._streams: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.leases: HostLeases | None = None  # set by main: host leases (docs/ha.md)

    def _interval(self) -> float:
        return self.registry.config.heartbeat_interval

    async def _beat_answer(self, req: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        """The answer to a committed heartbeat: it renewed the host's lease."""
        out = pb.HeartbeatResponse(heartbeat_interval_seconds=self._interval(),
                                   host_lease_ttl_seconds=self.registry.config.host_lease_ttl)
        if req.fenced_databases and self.leases is not None:
            out.primary_databases.extend(await asyncio.to_thread(
                self.leases.still_primary, req.host_id, list(req.fenced_databases)))
        return out

    async def RegisterHost(self, req: pb.RegisterHostRequest, ctx: Ctx
                           ) -> pb.RegisterHostResponse:
        refusal = host_refusal(req.host_id)
        if refusal:
            await ctx.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        await self.registry.register(convert.registration(req))
        return pb.RegisterHostResponse(heartbeat_interval_seconds=self._interval(),
                                       host_lease_ttl_seconds=self.registry.config.host_lease_ttl)

    async def Heartbeat(self, req: pb.HeartbeatRequest, ctx: Ctx) -> pb.HeartbeatResponse:
        refusal = host_refusal(req.host_id)
        if refusal:
            await ctx.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        await self.registry.heartbeat(req.host_id, convert.capacity(req.capacity))
        return await self._beat_answer(req)

    async def HeartbeatStream(self, requests: AsyncIterator[pb.HeartbeatRequest], ctx: Ctx
                              ) -> AsyncIterator[pb.HeartbeatResponse]:
        """Each message is a unary Heartbeat without gRPC's per-call cost; the stream's
        certificate (authenticated once) must name the host of every message."""
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            async for req in requests:
                refusal = host_refusal(req.host_id)
                if refusal:
                    await ctx.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
                await self.registry.heartbeat(req.host_id, convert.capacity(req.capacity))
                yield await self._beat_answer(req)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # A cancelled handler sends no status; this tells the host to go elsewhere.
            try:
                await ctx.abort(grpc.StatusCode.UNAVAILABLE, "the coordinator is stopping")
            except aio.AbortError:
                raise
            except Exception:
                return  # the host had already closed its end: nothing to tell it
        finally:
            if task is not None:
                self._streams.discard(task)

    def end_streams(self) -> None:
        """Stopping: the heartbeat streams end now (their hosts reconnect, to another
        coordinator if they know one), rather than holding the shutdown's grace period."""
        self._stopping = True
        for task in list(self._streams):
            task.cancel()

    async def ListHosts(self, req: pb.ListHostsRequest, ctx: Ctx) -> pb.ListHostsResponse:
        return pb.ListHostsResponse(hosts=[convert.host(h) for h in await self.registry.list()])

    async def GetHost(self, req: pb.GetHostRequest, ctx: Ctx) -> pb.FleetHost:
        return convert.host(await self.registry.get(req.host_id))

    async def DrainHost(self, req: pb.DrainHostRequest, ctx: Ctx) -> pb.FleetHost:
        return convert.host(await self.registry.drain(req.host_id, True))

    async def UndrainHost(self, req: pb.DrainHostRequest, ctx: Ctx) -> pb.FleetHost:
        return convert.host(await self.registry.drain(req.host_id, False))

    async def PlaceDatabase(self, req: pb.PlaceDatabaseRequest, ctx: Ctx) -> pb.Placement:
        placed = await self.router.place(req.size_class, req.postgres_version,
                                         convert.constraints(req.constraints), req.dry_run,
                                         request_id=req.request_id)
        return convert.placement(placed)

    async def CreateDatabase(self, req: pb.FleetCreateDatabaseRequest, ctx: Ctx
                             ) -> pb.FleetCreateDatabaseResponse:
        resp, placed = await self.router.create_database(
            req.database, convert.constraints(req.constraints), req.reservation_id)
        return pb.FleetCreateDatabaseResponse(result=resp, placement=convert.placement(placed))

    async def GetDatabase(self, req: apb.GetDatabaseRequest, ctx: Ctx) -> pb.FleetDatabase:
        loc, live = await self.router.get_database(req.database)
        return convert.fleet_database(loc, live)

    async def ListDatabases(self, req: apb.ListDatabasesRequest, ctx: Ctx
                            ) -> pb.FleetListDatabasesResponse:
        found = await self.router.list_databases()
        return pb.FleetListDatabasesResponse(databases=[convert.fleet_database(x) for x in found])

    async def DeleteDatabase(self, req: apb.DeleteDatabaseRequest, ctx: Ctx
                             ) -> apb.DeleteDatabaseResponse:
        # Its replicas first: a replica left behind would hold a copy of a deleted
        # database. One whose host is away goes when it is back (Replicas.sweep).
        loc = await self.router.locate(req.database)
        await self.replicas.delete_all(loc.entry.id)
        return await self.router.delete_database(req)

    async def CreateBranch(self, req: apb.CreateBranchRequest, ctx: Ctx
                           ) -> apb.CreateBranchResponse:
        return await self.router.create_branch(req)

    async def GetBranch(self, req: apb.GetBranchRequest, ctx: Ctx) -> apb.Branch:
        return await self.router.get_branch(req)

    async def ListBranches(self, req: apb.ListBranchesRequest, ctx: Ctx
                           ) -> apb.ListBranchesResponse:
        return await self.router.list_branches(req)

    async def DeleteBranch(self, req: apb.DeleteBranchRequest, ctx: Ctx
                           ) -> apb.DeleteBranchResponse:
        return await self.router.delete_branch(req)

    async def ResetBranch(self, req: apb.ResetBranchRequest, ctx: Ctx) -> apb.Branch:
        return await self.router.reset_branch(req)

    async def GetConnection(self, req: apb.GetConnectionRequest, ctx: Ctx) -> apb.Connection:
        return await self.router.get_connection(req)

    # --- replicas (coordinator/replicas.py) ----------------------------------------

    async def CreateReplica(self, req: pb.FleetCreateReplicaRequest, ctx: Ctx) -> apb.Replica:
        return await self.replicas.create(req)

    async def ListReplicas(self, req: pb.FleetListReplicasRequest, ctx: Ctx
                           ) -> apb.ListReplicasResponse:
        return await self.replicas.list_replicas(req)

    async def DeleteReplica(self, req: pb.FleetDeleteReplicaRequest, ctx: Ctx
                            ) -> apb.DeleteReplicaResponse:
        return await self.replicas.delete(req)

    async def PromoteReplica(self, req: pb.FleetPromoteReplicaRequest, ctx: Ctx
                             ) -> pb.SwitchoverResponse:
        return await self.replicas.switchover(req)

    async def MoveDatabase(self, req: pb.MoveDatabaseRequest, ctx: Ctx
                           ) -> AsyncIterator[apb.MoveProgress]:
        async for progress in self.moves.move(req.database, req.to_host, req.request_id):
            yield progress
