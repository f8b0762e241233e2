"""A typed, synchronous client of the Agent API with retries and error mapping.

Mutating calls carry a fresh request_id; a retry after UNAVAILABLE reuses it,
so the daemon returns the first result instead of acting twice. Transport
failures are retried with backoff for about 10 s (a restarting daemon serves
again within seconds); a refused client certificate is never retried.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

import grpc

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc
from cygnet.cli.rpcerrors import from_rpc
from cygnet.cli.target import Target

T = TypeVar("T")

QUERY_TIMEOUT = 30.0
# A first database of a Postgres version runs initdb; big resets wait for checkpoints.
CHANGE_TIMEOUT = 900.0
# 9.75 s in all: longer than a daemon restart takes.
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0)


class _Mutation(Protocol):
    request_id: str


class Client:
    def __init__(self, target: Target, timeout: float | None = None, retry: bool = True) -> None:
        self.target = target
        self.timeout = timeout
        self.retry_delays = RETRY_DELAYS if retry else ()
        self._channel: grpc.Channel | None = None
        self._stub: Any = None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    @property
    def stub(self) -> Any:
        if self._stub is None:
            self._channel = self.target.channel()
            self._stub = agent_pb2_grpc.AgentStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    # --- the one place calls are made --------------------------------------

    def _call(self, method: Callable[..., T], request: Any, change: bool) -> T:
        if change and not request.request_id:
            request.request_id = str(uuid.uuid4())
        timeout = self.timeout or (CHANGE_TIMEOUT if change else QUERY_TIMEOUT)
        for attempt, delay in enumerate((*self.retry_delays, None)):
            try:
                return method(request, timeout=timeout)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and attempt == 0:
                    # gRPC reports a refused certificate as UNAVAILABLE too: no retry.
                    refusal = self.target.refusal()
                    if refusal is not None:
                        raise refusal from exc
                if exc.code() != grpc.StatusCode.UNAVAILABLE or delay is None:
                    raise from_rpc(exc, self.target.address, self._connected()) from exc
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _connected(self) -> bool:
        """Whether the daemon answers at all: tells 'unreachable' from 'too slow'."""
        if self._channel is None:
            return False
        try:
            grpc.channel_ready_future(self._channel).result(timeout=1.0)
        except grpc.FutureTimeoutError:
            return False
        return True

    def _query(self, name: str, request: Any, returns: type[T]) -> T:
        return cast(T, self._call(getattr(self.stub, name), request, change=False))

    def _change(self, name: str, request: _Mutation, returns: type[T]) -> T:
        return cast(T, self._call(getattr(self.stub, name), request, change=True))

    # --- databases ------------------------------------------------------------

    def create_database(self, req: pb.CreateDatabaseRequest) -> pb.CreateDatabaseResponse:
        return self._change("CreateDatabase", req, pb.CreateDatabaseResponse)

    def get_database(self, database: str) -> pb.Database:
        return self._query("GetDatabase", pb.GetDatabaseRequest(database=database), pb.Database)

    def list_databases(self) -> list[pb.Database]:
        resp = self._query("ListDatabases", pb.ListDatabasesRequest(), pb.ListDatabasesResponse)
        return list(resp.databases)

    def delete_database(self, database: str,
                        override_protection: bool = False) -> pb.DeleteDatabaseResponse:
        req = pb.DeleteDatabaseRequest(database=database,
                                       override_protection=override_protection)
        return self._change("DeleteDatabase", req, pb.DeleteDatabaseResponse)

    # --- branches -------------------------------------------------------------

    def create_branch(self, req: pb.CreateBranchRequest) -> pb.CreateBranchResponse:
        return self._change("CreateBranch", req, pb.CreateBranchResponse)

    def get_branch(self, ref: pb.BranchRef) -> pb.Branch:
        return self._query("GetBranch", pb.GetBranchRequest(branch=ref), pb.Branch)

    def list_branches(self, database: str = "") -> list[pb.Branch]:
        req = pb.ListBranchesRequest(database=database)
        return list(self._query("ListBranches", req, pb.ListBranchesResponse).branches)

    def delete_branch(self, ref: pb.BranchRef, cascade: bool,
                      override_protection: bool = False) -> list[str]:
        req = pb.DeleteBranchRequest(branch=ref, cascade=cascade,
                                     override_protection=override_protection)
        return list(self._change("DeleteBranch", req, pb.DeleteBranchResponse).deleted_branch_ids)

    def reset_branch(self, ref: pb.BranchRef, snapshot: str,
                     override_protection: bool = False) -> pb.Branch:
        req = pb.ResetBranchRequest(branch=ref, snapshot=snapshot,
                                    override_protection=override_protection)
        return self._change("ResetBranch", req, pb.Branch)

    def update_branch(self, req: pb.UpdateBranchRequest) -> pb.Branch:
        return self._change("UpdateBranch", req, pb.Branch)

    def promote_branch(self, ref: pb.BranchRef, drop_old_main: bool
                       ) -> pb.PromoteBranchResponse:
        req = pb.PromoteBranchRequest(branch=ref, drop_old_main=drop_old_main)
        return self._change("PromoteBranch", req, pb.PromoteBranchResponse)

    def branch_history(self, ref: pb.BranchRef) -> pb.BranchHistoryResponse:
        return self._query("BranchHistory", pb.BranchHistoryRequest(branch=ref),
                           pb.BranchHistoryResponse)

    def restore_branch(self, req: pb.RestoreBranchRequest) -> pb.RestoreBranchResponse:
        return self._change("RestoreBranch", req, pb.RestoreBranchResponse)

    def restore_database(self, req: pb.RestoreDatabaseRequest) -> pb.CreateDatabaseResponse:
        return self._change("RestoreDatabase", req, pb.CreateDatabaseResponse)

    def start_branch(self, ref: pb.BranchRef) -> pb.Branch:
        return self._change("StartBranch", pb.StartBranchRequest(branch=ref), pb.Branch)

    def stop_branch(self, ref: pb.BranchRef) -> pb.Branch:
        return self._change("StopBranch", pb.StopBranchRequest(branch=ref), pb.Branch)

    def suspend_branch(self, ref: pb.BranchRef) -> pb.Branch:
        return self._change("SuspendBranch", pb.SuspendBranchRequest(branch=ref), pb.Branch)

    def resume_branch(self, ref: pb.BranchRef) -> pb.Branch:
        return self._change("ResumeBranch", pb.ResumeBranchRequest(branch=ref), pb.Branch)

    def connection(self, ref: pb.BranchRef) -> pb.Connection:
        return self._query("GetConnection", pb.GetConnectionRequest(branch=ref), pb.Connection)

    # --- snapshots and host ---------------------------------------------------

    def create_snapshot(self, ref: pb.BranchRef, name: str) -> pb.Snapshot:
        req = pb.CreateSnapshotRequest(branch=ref, name=name)
        return self._change("CreateSnapshot", req, pb.Snapshot)

    def list_snapshots(self, ref: pb.BranchRef) -> list[pb.Snapshot]:
        req = pb.ListSnapshotsRequest(branch=ref)
        return list(self._query("ListSnapshots", req, pb.ListSnapshotsResponse).snapshots)

    def delete_snapshot(self, ref: pb.BranchRef, snapshot: str) -> str:
        req = pb.DeleteSnapshotRequest(branch=ref, snapshot=snapshot)
        return self._change("DeleteSnapshot", req, pb.DeleteSnapshotResponse).snapshot_id

    def host_status(self) -> pb.HostStatus:
        return self._query("GetHostStatus", pb.GetHostStatusRequest(), pb.HostStatus)
