"""The gRPC servicer: thin. It converts messages and calls AgentService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.duration_pb2 import Duration

from cygnet.agent import (
    convert,
    lifetime,
    move_archive,
    move_backups,
    move_source,
    moves,
    pitr_api,
    replicas_api,
)
from cygnet.agent.eventlog import current as current_journal
from cygnet.agent.service import AgentService
from cygnet.agent.upgrade import read_report
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from cygnet.endpoint.uri import with_endpoint
from cygnet.errors import Unavailable

Ctx = Any  # grpc.aio.ServicerContext


class AgentServicer(pb_grpc.AgentServicer):
    def __init__(self, service: AgentService) -> None:
        self.service = service

    async def CreateDatabase(self, req: pb.CreateDatabaseRequest, ctx: Ctx
                             ) -> pb.CreateDatabaseResponse:
        db, main = await self.service.create_database(
            req.name, req.postgres_version, req.size_class, req.pool, req.request_id,
            quota=req.quota_bytes, settings=dict(req.settings))
        conn = self.service.host.clusters.connection(main.record)
        return pb.CreateDatabaseResponse(database=convert.database(db),
                                         main_branch=convert.branch(main),
                                         connection=with_endpoint(
                                             convert.connection(conn), self.service.host.config,
                                             db.name, main.record))

    async def GetDatabase(self, req: pb.GetDatabaseRequest, ctx: Ctx) -> pb.Database:
        return convert.database(await self.service.get_database(req.database))

    async def ListDatabases(self, req: pb.ListDatabasesRequest, ctx: Ctx
                            ) -> pb.ListDatabasesResponse:
        dbs = await self.service.list_databases()
        return pb.ListDatabasesResponse(databases=[convert.database(d) for d in dbs])

    async def DeleteDatabase(self, req: pb.DeleteDatabaseRequest, ctx: Ctx
                             ) -> pb.DeleteDatabaseResponse:
        db, deleted = await self.service.delete_database(req.database, req.request_id,
                                                         req.override_protection)
        return pb.DeleteDatabaseResponse(database_id=db.id, deleted_branch_ids=deleted)

    async def CreateBranch(self, req: pb.CreateBranchRequest, ctx: Ctx
                           ) -> pb.CreateBranchResponse:
        if pitr_api.wants_point(req):  # a point-in-time branch (agent/pitr.py)
            view = await pitr_api.create_branch_at(self.service, req)
            conn = self.service.host.clusters.connection(view.record)
            return pb.CreateBranchResponse(branch=convert.branch(view), connection=with_endpoint(
                convert.connection(conn), self.service.host.config, view.database.name,
                view.record))
        view = await self.service.create_branch(req.database, req.name, req.parent,
                                                req.parent_snapshot, req.request_id,
                                                upgrade_to=req.upgrade_to,
                                                suspend_after=req.suspend_after.seconds
                                                if req.HasField("suspend_after") else -1,
                                                expires_at=lifetime.create_expiry(req))
        conn = self.service.host.clusters.connection(view.record)
        report = read_report(self.service.host.clusters.files(view.record)) if req.upgrade_to \
            else None
        return pb.CreateBranchResponse(branch=convert.branch(view),
                                       connection=with_endpoint(
                                           convert.connection(conn), self.service.host.config,
                                           view.database.name, view.record),
                                       upgrade=convert.upgrade(report) if report else None)

    async def BranchHistory(self, req: pb.BranchHistoryRequest, ctx: Ctx
                            ) -> pb.BranchHistoryResponse:
        return await pitr_api.branch_history(self.service, convert.branch_ref(req.branch))

    async def RestoreBranch(self, req: pb.RestoreBranchRequest, ctx: Ctx
                            ) -> pb.RestoreBranchResponse:
        return await pitr_api.restore_branch(self.service, req)

    async def RestoreDatabase(self, req: pb.RestoreDatabaseRequest, ctx: Ctx
                              ) -> pb.CreateDatabaseResponse:
        db, main = await pitr_api.restore_database(self.service, req)
        conn = self.service.host.clusters.connection(main.record)
        return pb.CreateDatabaseResponse(database=convert.database(db),
                                         main_branch=convert.branch(main),
                                         connection=with_endpoint(
                                             convert.connection(conn), self.service.host.config,
                                             db.name, main.record))

    async def GetBranch(self, req: pb.GetBranchRequest, ctx: Ctx) -> pb.Branch:
        branch = convert.branch(await self.service.get_branch(convert.branch_ref(req.branch)))
        return await replicas_api.with_lag(self.service, branch)  # main's replicas' lag

    async def ListBranches(self, req: pb.ListBranchesRequest, ctx: Ctx
                           ) -> pb.ListBranchesResponse:
        views = await self.service.list_branches(req.database)
        reply = pb.ListBranchesResponse()
        # With a database named, the views are of the build listings share.
        convert.fill_branches(reply.branches, views, shared=bool(req.database))
        return reply

    async def DeleteBranch(self, req: pb.DeleteBranchRequest, ctx: Ctx
                           ) -> pb.DeleteBranchResponse:
        deleted = await self.service.delete_branch(convert.branch_ref(req.branch), req.cascade,
                                                   req.request_id, req.override_protection)
        return pb.DeleteBranchResponse(deleted_branch_ids=deleted)

    async def ResetBranch(self, req: pb.ResetBranchRequest, ctx: Ctx) -> pb.Branch:
        view = await self.service.reset_branch(convert.branch_ref(req.branch), req.snapshot,
                                               req.request_id, req.override_protection)
        return convert.branch(view)

    async def PromoteBranch(self, req: pb.PromoteBranchRequest, ctx: Ctx
                            ) -> pb.PromoteBranchResponse:
        main, old, seconds = await self.service.promote_branch(
            convert.branch_ref(req.branch), req.drop_old_main, req.request_id)
        return pb.PromoteBranchResponse(
            main=convert.branch(main), old_main=convert.branch(old) if old else None,
            downtime=Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9)))

    async def StartBranch(self, req: pb.StartBranchRequest, ctx: Ctx) -> pb.Branch:
        view = await self.service.set_running(convert.branch_ref(req.branch), True,
                                              req.request_id)
        return convert.branch(view)

    async def StopBranch(self, req: pb.StopBranchRequest, ctx: Ctx) -> pb.Branch:
        view = await self.service.set_running(convert.branch_ref(req.branch), False,
                                              req.request_id)
        return convert.branch(view)

    async def SuspendBranch(self, req: pb.SuspendBranchRequest, ctx: Ctx) -> pb.Branch:
        view = await self.service.suspend_branch(convert.branch_ref(req.branch), req.request_id)
        return convert.branch(view)

    async def ResumeBranch(self, req: pb.ResumeBranchRequest, ctx: Ctx) -> pb.Branch:
        view = await self.service.resume_branch(convert.branch_ref(req.branch), req.request_id)
        return convert.branch(view)

    async def GetConnection(self, req: pb.GetConnectionRequest, ctx: Ctx) -> pb.Connection:
        db, branch = await self.service.read_branch(convert.branch_ref(req.branch))
        conn = convert.connection(self.service.host.clusters.connection(branch))
        return with_endpoint(conn, self.service.host.config, db.name, branch)

    async def CreateSnapshot(self, req: pb.CreateSnapshotRequest, ctx: Ctx) -> pb.Snapshot:
        snap = await self.service.create_snapshot(convert.branch_ref(req.branch), req.name,
                                                  req.request_id)
        return convert.snapshot(snap, {})

    async def ListSnapshots(self, req: pb.ListSnapshotsRequest, ctx: Ctx
                            ) -> pb.ListSnapshotsResponse:
        db, snaps = await self.service.list_snapshots(convert.branch_ref(req.branch))
        ids = {b.dataset: b.id for b in db.branches.values()}
        return pb.ListSnapshotsResponse(snapshots=[convert.snapshot(s, ids) for s in snaps])

    async def DeleteSnapshot(self, req: pb.DeleteSnapshotRequest, ctx: Ctx
                             ) -> pb.DeleteSnapshotResponse:
        snap = await self.service.delete_snapshot(convert.branch_ref(req.branch), req.snapshot,
                                                  req.request_id)
        return pb.DeleteSnapshotResponse(snapshot_id=snap.id)

    async def GetHostStatus(self, req: pb.GetHostStatusRequest, ctx: Ctx) -> pb.HostStatus:
        return convert.host_status(await self.service.host.status())

    async def GetBranchConfig(self, req: pb.GetBranchConfigRequest, ctx: Ctx
                              ) -> pb.BranchConfig:
        return convert.branch_config(
            await self.service.branch_config(convert.branch_ref(req.branch)))

    async def SetBranchConfig(self, req: pb.SetBranchConfigRequest, ctx: Ctx
                              ) -> pb.BranchConfig:
        view = await self.service.set_branch_config(
            convert.branch_ref(req.branch), dict(req.settings), req.restart, req.request_id)
        return convert.branch_config(view)

    async def ResetBranchConfig(self, req: pb.ResetBranchConfigRequest, ctx: Ctx
                                ) -> pb.BranchConfig:
        view = await self.service.reset_branch_config(
            convert.branch_ref(req.branch), list(req.names), req.restart, req.request_id)
        return convert.branch_config(view)

    async def ListExtensions(self, req: pb.ListExtensionsRequest, ctx: Ctx
                             ) -> pb.ListExtensionsResponse:
        found = await self.service.extensions(req.database)
        return pb.ListExtensionsResponse(extensions=[convert.extension(e) for e in found])

    async def UpdateBranch(self, req: pb.UpdateBranchRequest, ctx: Ctx) -> pb.Branch:
        view = await lifetime.update(self.service, convert.branch_ref(req.branch),
                                     lifetime.change_of(req), req.request_id)
        if req.HasField("suspend_after") or req.clear_suspend_after:  # agent/scale.py
            view = await self.service.set_suspend_after(
                convert.branch_ref(req.branch),
                req.suspend_after.seconds if req.HasField("suspend_after") else -1)
        return convert.branch(view)

    async def WatchEvents(self, req: pb.WatchEventsRequest, ctx: Ctx
                          ) -> AsyncIterator[pb.Event]:
        journal = current_journal()
        if journal is None:
            raise Unavailable("the event journal is not open yet")
        async for event in journal.watch(req.cursor, from_oldest=req.from_oldest,
                                         follow=req.follow):
            yield lifetime.event_message(event)

    # --- replicas and switchover (agent/replicas*.py, agent/switchover.py) ----------

    async def CreateReplica(self, req: pb.CreateReplicaRequest, ctx: Ctx) -> pb.Replica:
        return await replicas_api.create(self.service, req)

    async def ListReplicas(self, req: pb.ListReplicasRequest, ctx: Ctx
                           ) -> pb.ListReplicasResponse:
        return await replicas_api.list_(self.service, req)

    async def DeleteReplica(self, req: pb.DeleteReplicaRequest, ctx: Ctx
                            ) -> pb.DeleteReplicaResponse:
        return await replicas_api.delete(self.service, req)

    async def HandOverPrimary(self, req: pb.HandOverPrimaryRequest, ctx: Ctx
                              ) -> pb.HandOverPrimaryResponse:
        return await replicas_api.hand_over(self.service, req)

    async def PromoteReplica(self, req: pb.PromoteReplicaRequest, ctx: Ctx) -> pb.Replica:
        return await replicas_api.promote(self.service, req)

    async def DemoteToReplica(self, req: pb.DemoteToReplicaRequest, ctx: Ctx) -> pb.Replica:
        return await replicas_api.demote(self.service, req)

    async def PrepareFailover(self, req: pb.PrepareFailoverRequest, ctx: Ctx
                              ) -> pb.PrepareFailoverResponse:
        return await replicas_api.prepare_failover(self.service, req)

    async def PrepareReplica(self, req: pb.PrepareReplicaRequest, ctx: Ctx
                             ) -> pb.PrepareReplicaResponse:
        return await replicas_api.prepare(self.service, req)

    async def ConfirmPrimary(self, req: pb.ConfirmPrimaryRequest, ctx: Ctx
                             ) -> pb.ConfirmPrimaryResponse:
        return await replicas_api.confirm_primary(self.service, req)

    async def ReleaseReplica(self, req: pb.ReleaseReplicaRequest, ctx: Ctx
                             ) -> pb.ReleaseReplicaResponse:
        return await replicas_api.release(self.service, req)

    async def SendSnapshot(self, req: pb.SendSnapshotRequest, ctx: Ctx
                           ) -> AsyncIterator[pb.TransferChunk]:
        async for chunk in replicas_api.send_snapshot(self.service, req):
            yield chunk

    # --- moves between hosts (agent/moves.py, agent/move_source.py) -----------------

    async def MoveIn(self, req: pb.MoveInRequest, ctx: Ctx) -> AsyncIterator[pb.MoveProgress]:
        async for progress in moves.move_in(self.service, replicas_api.peers(self.service),
                                            req):
            yield progress

    async def PrepareMove(self, req: pb.PrepareMoveRequest, ctx: Ctx) -> pb.MovePlan:
        replicas_api.calling_host()
        return await move_source.prepare(self.service, req)

    async def SendMoveStream(self, req: pb.SendMoveStreamRequest, ctx: Ctx
                             ) -> AsyncIterator[pb.TransferChunk]:
        replicas_api.calling_host()
        async for chunk in move_source.send(self.service, req):
            yield chunk

    async def SendMoveArchive(self, req: pb.SendMoveArchiveRequest, ctx: Ctx
                              ) -> AsyncIterator[pb.ArchiveChunk]:
        replicas_api.calling_host()
        async for chunk in move_archive.send(self.service, req):
            yield chunk

    async def SendMoveBackups(self, req: pb.SendMoveBackupsRequest, ctx: Ctx
                              ) -> AsyncIterator[pb.BackupChunk]:
        replicas_api.calling_host()
        async for chunk in move_backups.send(self.service.host, req):
            yield chunk

    async def EndMove(self, req: pb.EndMoveRequest, ctx: Ctx) -> pb.EndMoveResponse:
        return await move_source.end(self.service, req)
