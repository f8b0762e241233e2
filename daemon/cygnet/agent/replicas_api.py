"""The replica RPCs of the Agent service: who may ask, and which module answers.

Calls between agents (PrepareReplica, ReleaseReplica, SendSnapshot) come with
a host certificate (rpc/roles.py lets no other role make them); the calling
host is taken from that certificate, never from the request, so a host can
only make or drop its own slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from cygnet.agent import failsafe, lease, replicas, switchover, transfer
from cygnet.agent import replica_source as src
from cygnet.agent.service import AgentService
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.errors import FailedPrecondition, PermissionDenied
from cygnet.rpc.auth import CALLER

_peers: dict[int, transfer.Peers] = {}
_holds: dict[int, failsafe.Holds] = {}


def peers(service: AgentService) -> transfer.Peers:
    """One set of channels to other agents per service (the daemon has one)."""
    found = _peers.get(id(service))
    if found is None:
        found = _peers[id(service)] = transfer.Peers(service.host.config)
    return found


def holds(service: AgentService) -> failsafe.Holds:
    """The failsafe holds of this host's replicas (one set per service)."""
    found = _holds.get(id(service))
    if found is None:
        found = _holds[id(service)] = failsafe.Holds(service.host.config.run_dir)
    return found


def calling_host() -> str:
    caller = CALLER.get()
    if caller is None or caller.kind != "host" or not caller.name:
        raise PermissionDenied("only another host's agent may call this (a host certificate)")
    return caller.name


async def create(service: AgentService, req: pb.CreateReplicaRequest) -> pb.Replica:
    return await replicas.create(service.host, peers(service), req)


async def list_(service: AgentService, req: pb.ListReplicasRequest) -> pb.ListReplicasResponse:
    return pb.ListReplicasResponse(
        replicas=await replicas.list_replicas(service.host, req.database))


async def delete(service: AgentService, req: pb.DeleteReplicaRequest
                 ) -> pb.DeleteReplicaResponse:
    await replicas.delete(service.host, peers(service), req.database)
    return pb.DeleteReplicaResponse(database_id=req.database)


async def hand_over(service: AgentService, req: pb.HandOverPrimaryRequest
                    ) -> pb.HandOverPrimaryResponse:
    return await switchover.hand_over(service, req)


async def promote(service: AgentService, req: pb.PromoteReplicaRequest) -> pb.Replica:
    promoted = await switchover.promote(service, req)
    holds(service).promoted(promoted.database_id)
    return promoted


async def prepare_failover(service: AgentService, req: pb.PrepareFailoverRequest
                           ) -> pb.PrepareFailoverResponse:
    """Before a failover commits: refused while the old primary is confirmed here."""
    await replicas.find(service.host, req.database)  # NOT_FOUND without a replica
    holds(service).prepare_failover(req.database, req.window_seconds or 60.0, lease.now_ns())
    return pb.PrepareFailoverResponse()


async def confirm_primary(service: AgentService, req: pb.ConfirmPrimaryRequest
                          ) -> pb.ConfirmPrimaryResponse:
    """The calling host runs the primary this replica follows: hold off its failover."""
    caller = calling_host()
    rec = await replicas.find(service.host, req.database)
    assert rec is not None
    if rec.primary_host != caller:
        raise FailedPrecondition(f"the replica of {req.database} here follows "
                                 f"{rec.primary_host or 'no host'}, not {caller}")
    holds(service).confirm(req.database, caller, req.hold_seconds, lease.now_ns())
    return pb.ConfirmPrimaryResponse(host_id=service.host.config.host_id)


async def demote(service: AgentService, req: pb.DemoteToReplicaRequest) -> pb.Replica:
    return await switchover.demote(service, peers(service), req)


async def prepare(service: AgentService, req: pb.PrepareReplicaRequest
                  ) -> pb.PrepareReplicaResponse:
    caller = calling_host()
    db_id = await service.database_id(req.database)
    async with service.host.db_locks[db_id]:
        db, _ = await service.read_database(db_id, snapshots=False)
        return await src.prepare(service.host, db, caller, req)


async def release(service: AgentService, req: pb.ReleaseReplicaRequest
                  ) -> pb.ReleaseReplicaResponse:
    caller = calling_host()
    db_id = await service.database_id(req.database)
    async with service.host.db_locks[db_id]:
        db, _ = await service.read_database(db_id)
        await src.release(service.host, db, caller, req)
    return pb.ReleaseReplicaResponse()


async def send_snapshot(service: AgentService, req: pb.SendSnapshotRequest
                        ) -> AsyncIterator[pb.TransferChunk]:
    calling_host()
    async for chunk in transfer.send_snapshot(service.host, req):
        yield chunk


async def with_lag(service: AgentService, branch: pb.Branch) -> pb.Branch:
    """GetBranch of a main with replicas: their lag as the primary sees it."""
    if branch.parent_branch_id:
        return branch
    db = service.host.find_database(branch.database_id)
    main = db.main if db is not None else None
    if main is not None:
        branch.replicas.extend(await src.lag(service.host, main))
    return branch
