"""The point-in-time RPCs, between the servicer and agent/pitr.py: CreateBranch with
at_time/at_lsn, BranchHistory and RestoreBranch (locking, request ids, replies)."""

from __future__ import annotations

import asyncio
from typing import Any

from cygnet.agent import archive, archive_restore, convert, history, pitr
from cygnet.agent import branches as br
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.agent.recovery import Target
from cygnet.agent.service import AgentService, BranchRef, BranchView
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.rpc.convert import timestamp
from cygnet.wal.lsn import format_lsn, parse_lsn


def target_of(req: Any) -> Target:
    """at_time / at_lsn of a request (validated by rpc/requests.py)."""
    if req.HasField("at_time"):
        return Target(time=req.at_time.ToNanoseconds() / 1e9)
    return Target(lsn=parse_lsn(req.at_lsn, "at_lsn")) if req.at_lsn else Target()


def wants_point(req: pb.CreateBranchRequest) -> bool:
    return req.HasField("at_time") or bool(req.at_lsn)


async def create_branch_at(service: AgentService, req: pb.CreateBranchRequest) -> BranchView:
    target = target_of(req)

    async def call() -> BranchView:
        db, inv = await service._locked_db(req.database)
        try:
            found = br.find_branch_by_request(inv, req.request_id)
            if found is not None:
                return service.view(db, found)
            branch = await pitr.create_branch_at(service.host, inv, db, req.name, req.parent,
                                                 target, req.request_id)
            db.branches[branch.id] = branch
            return service.view(db, branch)
        finally:
            service.host.db_locks[db.id].release()

    return await service.requests.run(req.request_id, "CreateBranch", call)


async def restore_branch(service: AgentService, req: pb.RestoreBranchRequest
                         ) -> pb.RestoreBranchResponse:
    target = target_of(req)

    async def action(db: DatabaseRecord, branch: BranchRecord) -> pb.RestoreBranchResponse:
        if not branch.port:  # suspended: its new data starts, so it needs a port (scale.py)
            await service.scaler.start_locked(db, branch, "restore")
        restored, kept = await pitr.restore_in_place(service.host, db, branch, target)
        await service.host.refresh_space(restored)
        reply = pb.RestoreBranchResponse(branch=convert.branch(service.view(db, restored)))
        if kept is not None:
            db.branches[kept.id] = kept
            reply.kept.CopyFrom(convert.branch(service.view(db, kept)))
        return reply

    ref = convert.branch_ref(req.branch)
    return await service._with_branch(ref, req.request_id, "RestoreBranch", action)


async def restore_database(service: AgentService, req: pb.RestoreDatabaseRequest
                           ) -> tuple[DatabaseRecord, BranchView]:
    target = target_of(req)

    async def call() -> tuple[DatabaseRecord, BranchView]:
        db, main = await archive_restore.restore_database(
            service.host, req.name, target, req.new_name, req.pool, req.request_id,
            req.from_host)
        await service.host.refresh_space(main)
        return db, service.view(db, main)

    return await service.requests.run(req.request_id, "RestoreDatabase", call)


def _point(t: float, lsn: int) -> pb.RecoveryPoint:
    return pb.RecoveryPoint(time=timestamp(t), lsn=format_lsn(lsn))


async def branch_history(service: AgentService, ref: BranchRef) -> pb.BranchHistoryResponse:
    db, branch = await service.read_branch(ref)
    hist = await asyncio.to_thread(history.load, service.host.config, db, branch)
    reply = pb.BranchHistoryResponse(archiving=archive.enabled(db, branch))
    first, last = hist.earliest, hist.latest
    if first is not None and last is not None:
        reply.earliest.CopyFrom(_point(first.point.time, first.point.high))
        reply.latest.CopyFrom(_point(last.end_time, last.end_lsn))
    for c in hist.candidates:
        reply.snapshots.append(pb.HistorySnapshot(
            snapshot_id=c.snapshot.id, name=c.snapshot.name, branch_id=c.branch.id,
            branch=c.branch.name, kind=c.snapshot.kind,
            point=_point(c.point.time, c.point.high)))
    for link in hist.chain:
        g = link.generation
        reply.generations.append(pb.ArchiveGeneration(
            branch_id=g.branch_id, generation=g.gen, start_lsn=format_lsn(g.start_lsn),
            files=len(link.objects), bytes=sum(o.size for o in link.objects.values())))
    for info in await asyncio.to_thread(history.backups, service.host.config, hist):
        meta = info.metadata
        reply.backups.append(pb.HistoryBackup(
            backup_id=info.backup_id, created_at=timestamp(info.created_at.timestamp()),
            branch_id=str(meta.get("branch_id", "")), branch=str(meta.get("branch", "")),
            trigger=str(meta.get("trigger", "")), logical_bytes=info.logical_bytes))
    return reply
