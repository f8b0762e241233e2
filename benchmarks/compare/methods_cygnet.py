"""Cygnet's two ways to a ready database, both through the gRPC API of a real cygnetd."""

from __future__ import annotations

import time

import cygnet
from benchmarks.common import wait_query
from benchmarks.compare.disk import zfs_used
from benchmarks.compare.methods import Copy, Source
from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon


def dataset_of(d: Daemon, object_id: str) -> str:
    return next(x for x in d.pool.datasets() if x.endswith("/" + object_id))


class CygnetBranch:
    """CreateBranch of the loaded database's main branch, until a query answers on it."""

    key = "cygnet_branch"

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.label = f"cygnet {cygnet.__version__} branch"

    def copy(self, source: Source, index: int) -> Copy:
        with self.d.stub() as s:
            started = time.perf_counter()
            resp = s.CreateBranch(pb.CreateBranchRequest(database=source.cygnet_db,
                                                         name=f"c{index}"), timeout=600)
            wait_query(resp.connection.uri)
            seconds = time.perf_counter() - started
        branch_id = resp.branch.id
        # The branch's own dataset, without the branch-point snapshot on main.
        detail: dict[str, float | int] = {
            "branch_dataset_used": zfs_used(dataset_of(self.d, branch_id))}

        def drop() -> None:
            with self.d.stub() as s:
                s.DeleteBranch(pb.DeleteBranchRequest(branch=pb.BranchRef(branch_id=branch_id)),
                               timeout=600)

        return Copy(seconds, drop, resp.connection.uri, detail)


class CygnetNewDatabase:
    """CreateDatabase: a clone of the golden template, empty whatever the source's size.

    Not a copy of the data: it is the floor of "a new database" in Cygnet,
    shown so the branch line can be read against it.
    """

    key = "cygnet_new_database"

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.label = f"cygnet {cygnet.__version__} new database (empty, from template)"

    def copy(self, source: Source, index: int) -> Copy:
        name = f"new-{source.label.lower()}-{index}"
        with self.d.stub() as s:
            started = time.perf_counter()
            resp = s.CreateDatabase(pb.CreateDatabaseRequest(name=name), timeout=600)
            wait_query(resp.connection.uri)
            seconds = time.perf_counter() - started
        detail: dict[str, float | int] = {
            "main_dataset_used": zfs_used(dataset_of(self.d, resp.main_branch.id))}

        def drop() -> None:
            with self.d.stub() as s:
                s.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=600)

        return Copy(seconds, drop, resp.connection.uri, detail)
