"""The Backups gRPC servicer: thin. Streams progress events, then one result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from cygnet.agent import convert as agent_convert
from cygnet.agent import offsite_api
from cygnet.agent.backups import convert
from cygnet.agent.backups.progress import Progress
from cygnet.agent.backups.service import BackupService, RestoreResult
from cygnet.api.v1 import backup_pb2 as pb
from cygnet.api.v1 import backup_pb2_grpc as pb_grpc

Ctx = Any  # grpc.aio.ServicerContext


class BackupsServicer(pb_grpc.BackupsServicer):
    def __init__(self, service: BackupService) -> None:
        self.service = service

    async def CreateBackup(self, req: pb.CreateBackupRequest, ctx: Ctx
                           ) -> AsyncIterator[pb.CreateBackupEvent]:
        ref = agent_convert.branch_ref(req.branch)
        async for event in self.service.create(ref, req.request_id):
            if isinstance(event, Progress):
                yield pb.CreateBackupEvent(progress=convert.progress(event))
            else:
                yield pb.CreateBackupEvent(result=convert.backup(event))

    async def ListBackups(self, req: pb.ListBackupsRequest, ctx: Ctx) -> pb.ListBackupsResponse:
        if req.remote:
            return await offsite_api.list_backups(req.database, req.branch)
        infos = await self.service.list_backups(req.database, req.branch)
        autos = await self.service.auto_snapshots(req.database, req.branch)
        return pb.ListBackupsResponse(backups=[convert.backup(i) for i in infos],
                                      snapshots=[convert.auto_snapshot(a) for a in autos])

    async def GetSchedule(self, req: pb.GetScheduleRequest, ctx: Ctx) -> pb.Schedule:
        return convert.schedule(await self.service.get_schedule(req.database))

    async def SetSchedule(self, req: pb.SetScheduleRequest, ctx: Ctx) -> pb.Schedule:
        view = await self.service.set_schedule(req.database, convert.schedule_change(req),
                                               req.request_id)
        return convert.schedule(view)

    async def VerifyBackups(self, req: pb.VerifyBackupsRequest, ctx: Ctx
                            ) -> AsyncIterator[pb.VerifyBackupsEvent]:
        async for event in self.service.verify():
            if isinstance(event, Progress):
                yield pb.VerifyBackupsEvent(progress=convert.progress(event))
            else:
                yield pb.VerifyBackupsEvent(result=convert.verify_report(event))

    async def RestoreBackup(self, req: pb.RestoreBackupRequest, ctx: Ctx
                            ) -> AsyncIterator[pb.RestoreBackupEvent]:
        events = self.service.restore(req.backup_id, req.branch_name, req.database_name,
                                      req.pool, req.request_id, req.remote)
        async for event in events:
            if isinstance(event, Progress):
                yield pb.RestoreBackupEvent(progress=convert.progress(event))
            else:
                yield pb.RestoreBackupEvent(result=self._restored(event))

    def _restored(self, r: RestoreResult) -> pb.RestoreBackupResponse:
        conn = self.service.host.clusters.connection(r.view.record)
        return pb.RestoreBackupResponse(
            database=agent_convert.database(r.view.database), branch=agent_convert.branch(r.view),
            connection=agent_convert.connection(conn), bytes_written=r.bytes_written,
            duration_seconds=r.duration_s)

    async def PruneBackups(self, req: pb.PruneBackupsRequest, ctx: Ctx
                           ) -> pb.PruneBackupsResponse:
        keep = req.keep_last if req.HasField("keep_last") else None
        report = await self.service.prune(keep, req.database, list(req.backup_ids),
                                          req.request_id)
        return convert.prune_report(report)

    async def DiffBranches(self, req: pb.DiffBranchesRequest, ctx: Ctx
                           ) -> AsyncIterator[pb.DiffBranchesEvent]:
        other = agent_convert.branch_ref(req.other, "other") if req.HasField("other") else None
        async for event in self.service.diff(agent_convert.branch_ref(req.branch), other):
            if isinstance(event, Progress):
                yield pb.DiffBranchesEvent(progress=convert.progress(event))
            else:
                yield pb.DiffBranchesEvent(result=convert.branch_diff(event))
