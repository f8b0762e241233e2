"""Upgrade rehearsal on a branch: a PostgreSQL 15 pgbench database upgraded to 18.

The parent stays on 15; the branch runs 18 with the same data and extension,
and the versions are named in every refusal.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import Daemon, query
from tests.integration.backup_helpers import create_backup, restore
from tests.integration.test_cli_support import assert_one_error_line, cygnet

pytestmark = pytest.mark.integration

Stub = pb_grpc.AgentStub
Source = pb.CreateDatabaseResponse

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"


def major(conn: pb.Connection) -> str:
    (row,) = query(conn, "select current_setting('server_version_num')::int / 10000")
    return str(row[0])


def refused(call: object) -> grpc.RpcError:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


@pytest.fixture(scope="module")
def source(daemon: Daemon) -> Iterator[pb.CreateDatabaseResponse]:
    """A 15 database with pgbench's tables (scale 1) and pgcrypto in use."""
    with daemon.stub() as stub:
        name = unique("up")
        db = stub.CreateDatabase(pb.CreateDatabaseRequest(
            name=name, postgres_version="15", size_class="nano"), timeout=120)
        subprocess.run([PGBENCH, "-i", "-s", "1", "-q", db.connection.uri], check=True,
                       capture_output=True, timeout=120)
        query(db.connection, "create extension pgcrypto; create table secrets as "
                             "select encode(digest('cygnet', 'sha256'), 'hex') as h")
        yield db
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)


def test_upgrade_rehearsal_from_15_to_18(daemon: Daemon, stub: Stub, source: Source) -> None:
    name = source.database.name
    out = cygnet(daemon, "branch", "create", f"{name}/pg18", "--upgrade-to", "18", "--json",
                 timeout=300).json()
    up, report = out["branch"], out["upgrade"]
    conn = stub.GetConnection(pb.GetConnectionRequest(
        branch=pb.BranchRef(database=name, name="pg18")))
    assert up["postgres_version"] == "18" == major(conn)
    assert (report["from_version"], report["to_version"]) == ("15", "18")
    assert report["seconds"] > 0
    checks = report["checks"]
    assert any(c.startswith("Checking database connection settings") for c in checks)
    assert all(c.endswith(": ok") for c in checks), checks
    assert "adminpack" in report["missing_extensions"]
    assert report["new_system_identifier"] != report["old_system_identifier"] != ""
    # Same data, same extension, TLS as everywhere.
    assert query(conn, "select count(*) from pgbench_accounts") == [(100000,)]
    assert query(conn, "select h = encode(digest('cygnet', 'sha256'), 'hex') from secrets") \
        == [(True,)]
    assert query(conn, "select ssl from pg_stat_ssl where pid = pg_backend_pid()") == [(True,)]
    # The parent and the database stay on 15.
    assert major(source.connection) == "15"
    got = stub.GetDatabase(pb.GetDatabaseRequest(database=name))
    assert got.postgres_version == "15"
    # The branch keeps its own major across a restart.
    ref = pb.BranchRef(database=name, name="pg18")
    stub.StopBranch(pb.StopBranchRequest(branch=ref), timeout=60)
    stub.StartBranch(pb.StartBranchRequest(branch=ref), timeout=60)
    assert stub.GetBranch(pb.GetBranchRequest(branch=ref)).postgres_version == "18"
    assert major(conn) == "18"


def test_an_upgraded_branch_is_no_parent_and_resets_only_to_its_snapshots(stub: Stub,
                                                                          source: Source) -> None:
    name = source.database.name
    branches = {b.name for b in stub.ListBranches(pb.ListBranchesRequest(database=name)).branches}
    if "pg18" not in branches:
        pytest.skip("needs the rehearsal above")
    err = refused(lambda: stub.CreateBranch(pb.CreateBranchRequest(
        database=name, name="child", parent="pg18"), timeout=60))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "runs PostgreSQL 18" in (err.details() or "") and "runs 15" in (err.details() or "")
    err = refused(lambda: stub.ResetBranch(pb.ResetBranchRequest(
        branch=pb.BranchRef(database=name, name="pg18")), timeout=60))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "PostgreSQL 18" in (err.details() or "")


def test_an_upgraded_branch_backs_up_as_its_own_major(daemon: Daemon, stub: Stub,
                                                      source: Source) -> None:
    name = source.database.name
    branches = {b.name for b in stub.ListBranches(pb.ListBranchesRequest(database=name)).branches}
    if "pg18" not in branches:
        pytest.skip("needs the rehearsal above")
    backup = create_backup(daemon, pb.BranchRef(database=name, name="pg18"))
    assert backup.postgres_version == "18"
    err = refused(lambda: restore(daemon, backup.id, branch_name="back"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "PostgreSQL 18 data" in (err.details() or "") and "runs 15" in (err.details() or "")
    copy = unique("up18")
    done = restore(daemon, backup.id, database_name=copy)
    try:
        assert done.branch.postgres_version == "18" == major(done.connection)
        assert query(done.connection, "select count(*) from pgbench_branches") == [(1,)]
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=copy), timeout=120)


def test_refusals_name_the_versions(daemon: Daemon, stub: Stub, source: Source) -> None:
    name = source.database.name

    def upgrade(to: str, branch: str = "bad") -> grpc.RpcError:
        return refused(lambda: stub.CreateBranch(pb.CreateBranchRequest(
            database=name, name=branch, upgrade_to=to), timeout=120))

    err = upgrade("19")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "upgrade_to" in (err.details() or "") and "15, 16, 17, 18" in (err.details() or "")
    assert_one_error_line(
        cygnet(daemon, "branch", "create", f"{name}/bad", "--upgrade-to", "14", expect=None),
        "PostgreSQL 14 is not installed", "15, 16, 17, 18")
    err = upgrade("15")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already runs PostgreSQL 15" in (err.details() or "")
    # An extension created on 15 that 18 does not have: refused, nothing left behind.
    query(source.connection, "create extension adminpack")
    try:
        err = upgrade("18")
    finally:
        query(source.connection, "drop extension adminpack")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    detail = err.details() or ""
    assert "adminpack" in detail and "PostgreSQL 18" in detail and "PostgreSQL 15" in detail
    listed = stub.ListBranches(pb.ListBranchesRequest(database=name)).branches
    assert "bad" not in {b.name for b in listed}


def test_a_downgrade_is_refused(stub: Stub) -> None:
    name = unique("v16")
    stub.CreateDatabase(pb.CreateDatabaseRequest(name=name, postgres_version="16",
                                                 size_class="nano"), timeout=120)
    try:
        err = refused(lambda: stub.CreateBranch(pb.CreateBranchRequest(
            database=name, name="down", upgrade_to="15"), timeout=60))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot be downgraded to PostgreSQL 15: it runs 16" in (err.details() or "")
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)
