"""Every supported PostgreSQL major side by side: create, branch, reset, back up, restore.

One small database per major on the session daemon; the first use of a major
on a pool pays for its template's initdb.
"""

from __future__ import annotations

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import Daemon, query
from tests.integration.backup_helpers import create_backup, restore

pytestmark = pytest.mark.integration

Stub = pb_grpc.AgentStub

SUPPORTED = ("15", "16", "17", "18")


def major(conn: pb.Connection) -> str:
    (row,) = query(conn, "select current_setting('server_version_num')::int / 10000")
    return str(row[0])


def uses_tls(conn: pb.Connection) -> bool:
    (row,) = query(conn, "select ssl from pg_stat_ssl where pid = pg_backend_pid()")
    return bool(row[0])


def values(conn: pb.Connection) -> list[str]:
    return [str(r[0]) for r in query(conn, "select v from t order by v")]


def test_host_status_lists_every_supported_major(stub: Stub) -> None:
    status = stub.GetHostStatus(pb.GetHostStatusRequest())
    assert set(SUPPORTED) <= set(status.postgres_versions), status.postgres_versions
    assert list(status.postgres_versions) == sorted(status.postgres_versions, key=int)


@pytest.mark.parametrize("version", SUPPORTED)
def test_each_major_creates_branches_resets_backs_up_and_restores(
        daemon: Daemon, stub: Stub, version: str) -> None:
    name = unique(f"v{version}")
    db = stub.CreateDatabase(pb.CreateDatabaseRequest(
        name=name, postgres_version=version, size_class="nano"), timeout=180)
    try:
        assert db.database.postgres_version == version == db.main_branch.postgres_version
        assert major(db.connection) == version and uses_tls(db.connection)
        if int(version) >= 17:  # the settings only newer majors know
            assert query(db.connection, "show summarize_wal") == [("off",)]
        if int(version) >= 18:
            assert query(db.connection, "show io_method") == [("worker",)]
        query(db.connection, "create table t(v text); insert into t values ('main')")

        br = stub.CreateBranch(pb.CreateBranchRequest(database=name, name="b"), timeout=60)
        assert br.branch.postgres_version == version and major(br.connection) == version
        query(br.connection, "insert into t values ('branch-only')")
        assert values(br.connection) == ["branch-only", "main"]
        stub.ResetBranch(pb.ResetBranchRequest(branch=pb.BranchRef(database=name, name="b")),
                         timeout=60)
        assert values(br.connection) == ["main"] and uses_tls(br.connection)

        backup = create_backup(daemon, pb.BranchRef(database=name))
        assert backup.postgres_version == version
        done = restore(daemon, backup.id, branch_name="restored")
        assert done.branch.postgres_version == version
        assert values(done.connection) == ["main"] and major(done.connection) == version
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)


def test_a_major_that_is_not_installed_names_the_installed_ones(stub: Stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateDatabase(pb.CreateDatabaseRequest(name=unique(), postgres_version="14"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    detail = err.value.details() or ""
    assert "postgres_version" in detail and "PostgreSQL 14 is not installed" in detail
    assert "15, 16, 17, 18" in detail


def test_the_default_major_is_pinned_to_15(stub: Stub) -> None:
    name = unique()
    db = stub.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"), timeout=120)
    try:
        assert db.database.postgres_version == "15" == major(db.connection)
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)
