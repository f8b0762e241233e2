"""Branches, snapshots and resets through the real API: isolation and lineage."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from cygnet.postgres import procfs
from cygnet.postgres.pidfile import read_pidfile
from tests.conftest import unique
from tests.harness import Daemon, query

pytestmark = pytest.mark.integration

Stub = pb_grpc.AgentStub
Db = pb.CreateDatabaseResponse


def ref(db: str, name: str = "") -> pb.BranchRef:
    return pb.BranchRef(database=db, name=name)


def values(conn: pb.Connection) -> list[str]:
    return [r[0] for r in query(conn, "select v from t order by v")]  # type: ignore[misc]


@pytest.fixture
def db(stub: Stub) -> pb.CreateDatabaseResponse:
    resp: pb.CreateDatabaseResponse = stub.CreateDatabase(
        pb.CreateDatabaseRequest(name=unique(), size_class="nano"), timeout=120)
    query(resp.connection, "create table t(v text); insert into t values ('parent-1')")
    return resp


def branch(stub: Stub, db: pb.CreateDatabaseResponse, name: str, parent: str = "",
           snapshot: str = "") -> pb.CreateBranchResponse:
    made: pb.CreateBranchResponse = stub.CreateBranch(pb.CreateBranchRequest(
        database=db.database.name, name=name, parent=parent, parent_snapshot=snapshot),
        timeout=60)
    return made


def test_branches_are_isolated_from_parent_and_siblings(stub: Stub, db: Db) -> None:
    a = branch(stub, db, "a")
    b = branch(stub, db, "b")
    assert values(a.connection) == ["parent-1"] == values(b.connection)
    query(a.connection, "insert into t values ('a-only')")
    query(b.connection, "insert into t values ('b-only')")
    query(db.connection, "insert into t values ('parent-2')")
    assert values(a.connection) == ["a-only", "parent-1"]
    assert values(b.connection) == ["b-only", "parent-1"]
    assert values(db.connection) == ["parent-1", "parent-2"]
    assert len({db.connection.port, a.connection.port, b.connection.port}) == 3


def test_branch_shows_its_lineage(stub: Stub, db: Db) -> None:
    child = branch(stub, db, "child").branch
    got = stub.GetBranch(pb.GetBranchRequest(branch=pb.BranchRef(branch_id=child.id)))
    assert got.parent_branch_id == db.main_branch.id and got.parent_branch_name == "main"
    assert got.origin_snapshot and got.state == pb.BRANCH_STATE_RUNNING
    assert got.created_at.seconds > 0 and got.used_bytes > 0 and got.logical_bytes > 0
    main = stub.GetBranch(pb.GetBranchRequest(branch=ref(db.database.name)))
    assert list(main.child_branch_ids) == [child.id]
    listed = stub.ListBranches(pb.ListBranchesRequest(database=db.database.id)).branches
    assert [b.name for b in listed] == ["main", "child"]


def test_branch_of_a_branch_and_from_a_snapshot(stub: Stub, db: Db) -> None:
    snap = stub.CreateSnapshot(pb.CreateSnapshotRequest(branch=ref(db.database.name),
                                                        name="before"))
    query(db.connection, "insert into t values ('after-snapshot')")
    old = branch(stub, db, "old", snapshot="before")
    assert values(old.connection) == ["parent-1"]
    grandchild = branch(stub, db, "grandchild", parent="old")
    assert values(grandchild.connection) == ["parent-1"]
    assert grandchild.branch.parent_branch_id == old.branch.id
    snaps = stub.ListSnapshots(pb.ListSnapshotsRequest(branch=ref(db.database.name)))
    assert [s.name for s in snaps.snapshots] == ["before"]
    assert list(snaps.snapshots[0].dependent_branch_ids) == [old.branch.id]
    assert snap.id == snaps.snapshots[0].id


def test_snapshot_with_dependents_cannot_be_deleted(stub: Stub, db: Db) -> None:
    stub.CreateSnapshot(pb.CreateSnapshotRequest(branch=ref(db.database.name), name="s1"))
    child = branch(stub, db, "from-s1", snapshot="s1")
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteSnapshot(pb.DeleteSnapshotRequest(branch=ref(db.database.name),
                                                     snapshot="s1"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "from-s1" in err.value.details()
    stub.DeleteBranch(pb.DeleteBranchRequest(branch=pb.BranchRef(branch_id=child.branch.id)))
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(branch=ref(db.database.name), snapshot="s1"))
    snaps = stub.ListSnapshots(pb.ListSnapshotsRequest(branch=ref(db.database.name)))
    assert not snaps.snapshots


def test_duplicate_names_conflict(stub: Stub, db: Db) -> None:
    branch(stub, db, "dup")
    with pytest.raises(grpc.RpcError) as err:
        branch(stub, db, "dup")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    stub.CreateSnapshot(pb.CreateSnapshotRequest(branch=ref(db.database.name), name="x"))
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateSnapshot(pb.CreateSnapshotRequest(branch=ref(db.database.name), name="x"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_delete_refuses_children_unless_cascade(stub: Stub, daemon: Daemon, db: Db) -> None:
    mid = branch(stub, db, "mid")
    leaf = branch(stub, db, "leaf", parent="mid")
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteBranch(pb.DeleteBranchRequest(branch=ref(db.database.name, "mid")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "leaf" in err.value.details()
    deleted = stub.DeleteBranch(pb.DeleteBranchRequest(branch=ref(db.database.name, "mid"),
                                                       cascade=True))
    assert list(deleted.deleted_branch_ids) == [leaf.branch.id, mid.branch.id]
    names = [b.name for b in stub.ListBranches(
        pb.ListBranchesRequest(database=db.database.id)).branches]
    assert names == ["main"]
    # Their branch points on main are gone too: nothing but the database's own datasets.
    leftovers = [d for d in daemon.pool.datasets()
                 if mid.branch.id in d or leaf.branch.id in d or ("@" in d and db.database.id in d)]
    assert leftovers == []
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteBranch(pb.DeleteBranchRequest(branch=ref(db.database.name, "main")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_reset_to_parent_keeps_connection_string(stub: Stub, db: Db) -> None:
    child = branch(stub, db, "resettable")
    query(child.connection, "insert into t values ('child-work')")
    query(db.connection, "insert into t values ('parent-2')")
    reset = stub.ResetBranch(pb.ResetBranchRequest(branch=ref(db.database.name, "resettable")),
                             timeout=60)
    assert reset.id == child.branch.id and reset.port == child.branch.port
    assert reset.state == pb.BRANCH_STATE_RUNNING
    conn = stub.GetConnection(pb.GetConnectionRequest(branch=ref(db.database.name,
                                                                 "resettable")))
    assert conn.uri == child.connection.uri
    assert values(child.connection) == ["parent-1", "parent-2"]


def test_reset_to_snapshot(stub: Stub, db: Db) -> None:
    child = branch(stub, db, "snapme")
    query(child.connection, "insert into t values ('kept')")
    stub.CreateSnapshot(pb.CreateSnapshotRequest(branch=ref(db.database.name, "snapme"),
                                                 name="good"))
    query(child.connection, "delete from t")
    stub.ResetBranch(pb.ResetBranchRequest(branch=ref(db.database.name, "snapme"),
                                           snapshot="good"), timeout=60)
    assert values(child.connection) == ["kept", "parent-1"]
    with pytest.raises(grpc.RpcError) as err:
        stub.ResetBranch(pb.ResetBranchRequest(branch=ref(db.database.name)), timeout=60)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_reset_refuses_with_children(stub: Stub, db: Db) -> None:
    branch(stub, db, "p")
    branch(stub, db, "c", parent="p")
    with pytest.raises(grpc.RpcError) as err:
        stub.ResetBranch(pb.ResetBranchRequest(branch=ref(db.database.name, "p")), timeout=60)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def _last_checkpoint(conn: pb.Connection) -> object:
    return query(conn, "select checkpoint_lsn from pg_control_checkpoint()")[0][0]


def _insert_lsn(conn: pb.Connection) -> object:
    return query(conn, "select pg_current_wal_insert_lsn()")[0][0]


def test_an_idle_parent_is_branched_without_another_checkpoint(stub: Stub, db: Db) -> None:
    """The CHECKPOINT before a branch point only shortens the clone's recovery. While
    the parent's WAL has not moved since its last one, or only by archive_timeout's
    segment switch, another would only write WAL, and force another switch."""
    _last_checkpoint(db.connection), _insert_lsn(db.connection)  # their catalog reads
    branch(stub, db, "first")  # (hint bits, logged as full pages) are done before it
    checkpoint, unmoved = _last_checkpoint(db.connection), _insert_lsn(db.connection)
    branch(stub, db, "second")
    assert _last_checkpoint(db.connection) == checkpoint
    deadline = time.monotonic() + 30  # archive_timeout (2 s) ends the CHECKPOINT's segment
    while _insert_lsn(db.connection) == unmoved:
        assert time.monotonic() < deadline, "archive_timeout never switched the segment"
        time.sleep(0.2)
    third = branch(stub, db, "third")
    assert _last_checkpoint(db.connection) == checkpoint
    query(db.connection, "insert into t values ('parent-2')")
    fourth = branch(stub, db, "fourth")
    assert _last_checkpoint(db.connection) != checkpoint
    assert values(third.connection) == ["parent-1"]
    assert values(fourth.connection) == ["parent-1", "parent-2"]


def test_stop_and_start(stub: Stub, db: Db) -> None:
    child = branch(stub, db, "sleepy")
    stopped = stub.StopBranch(pb.StopBranchRequest(branch=ref(db.database.name, "sleepy")))
    assert stopped.state == pb.BRANCH_STATE_STOPPED and not stopped.desired_running
    with pytest.raises(Exception):  # noqa: B017 - any connection error will do
        query(child.connection, "select 1")
    # A stopped parent can still be branched (no checkpoint needed).
    grand = branch(stub, db, "from-stopped", parent="sleepy")
    assert values(grand.connection) == ["parent-1"]
    started = stub.StartBranch(pb.StartBranchRequest(branch=ref(db.database.name, "sleepy")))
    assert started.state == pb.BRANCH_STATE_RUNNING
    assert values(child.connection) == ["parent-1"]


def field_of(err: grpc.RpcError) -> str:
    field: str = dict(err.trailing_metadata() or ()).get("cygnet-field", "")
    return field


def test_an_id_never_silently_wins_over_a_name(stub: Stub, db: Db) -> None:
    # `branch create t1/<main's id>` used to be accepted; `branch show` then showed main.
    with pytest.raises(grpc.RpcError) as err:
        branch(stub, db, db.main_branch.id)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    kid = branch(stub, db, "kid").branch
    agreeing = pb.BranchRef(branch_id=kid.id, database=db.database.name, name="kid")
    assert stub.GetBranch(pb.GetBranchRequest(branch=agreeing)).id == kid.id
    for ref, field in ((pb.BranchRef(branch_id=kid.id, database=db.database.name,
                                     name="main"), "branch.name"),
                       (pb.BranchRef(branch_id=kid.id, database=unique()), "branch.database")):
        with pytest.raises(grpc.RpcError) as err:
            stub.GetBranch(pb.GetBranchRequest(branch=ref))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_of(err.value) == field
        with pytest.raises(grpc.RpcError) as err:
            stub.DeleteBranch(pb.DeleteBranchRequest(branch=ref))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.GetBranch(pb.GetBranchRequest(branch=pb.BranchRef(branch_id=kid.id))).name


def test_a_retried_request_gets_the_first_failure(stub: Stub, db: Db) -> None:
    rid = f"fail-{unique()}"
    req = pb.CreateBranchRequest(database=db.database.name, name="late", parent_snapshot="s1",
                                 request_id=rid)
    with pytest.raises(grpc.RpcError) as first:
        stub.CreateBranch(req, timeout=60)
    assert first.value.code() == grpc.StatusCode.NOT_FOUND
    stub.CreateSnapshot(pb.CreateSnapshotRequest(branch=ref(db.database.name), name="s1"),
                        timeout=60)
    # The same request id answers as the first time, without running again.
    with pytest.raises(grpc.RpcError) as again:
        stub.CreateBranch(req, timeout=60)
    assert (again.value.code(), again.value.details()) == (first.value.code(),
                                                           first.value.details())
    names = {b.name for b in stub.ListBranches(
        pb.ListBranchesRequest(database=db.database.id)).branches}
    assert "late" not in names
    req.request_id = ""
    assert branch(stub, db, "late", snapshot="s1").branch.name == "late"


def test_a_postmaster_that_cannot_start_is_aborted_once(stub: Stub, daemon: Daemon, db: Db) -> None:
    # Branches inherit ALTER SYSTEM settings: this one keeps any new postmaster down
    # on a host without huge pages (Cygnet strips only the settings it owns).
    if "HugePages_Total:       0" not in Path("/proc/meminfo").read_text():
        pytest.skip("this host has huge pages: huge_pages = on would not stop a postmaster")
    query(db.connection, "alter system set huge_pages = on")
    try:
        rid = f"abort-{unique()}"
        req = pb.CreateBranchRequest(database=db.database.name, name="doomed", request_id=rid)
        undone = "removing what was made"
        before = daemon.log_path.read_text(errors="replace").count(undone)
        with pytest.raises(grpc.RpcError) as first:
            stub.CreateBranch(req, timeout=120)
        # A domain failure, not UNAVAILABLE: a client would retry the whole create.
        assert first.value.code() == grpc.StatusCode.ABORTED, first.value.details()
        assert "postmaster" in first.value.details()
        with pytest.raises(grpc.RpcError) as again:
            stub.CreateBranch(req, timeout=120)
        assert (again.value.code(), again.value.details()) == (first.value.code(),
                                                               first.value.details())
        after = daemon.log_path.read_text(errors="replace").count(undone)
        assert after - before == 1  # tried (and undone) once, not once per call
        names = {b.name for b in stub.ListBranches(
            pb.ListBranchesRequest(database=db.database.id)).branches}
        assert "doomed" not in names
    finally:
        query(db.connection, "alter system reset huge_pages")


def test_one_pass_over_proc_finds_running_postmasters_only(stub: Stub, db: Db,
                                                           daemon: Daemon) -> None:
    """The list views' liveness (agent/liveness.py): running main found by its data
    directory, with the pid its pid file names; a stopped branch not found."""
    stopped = branch(stub, db, "quiet")
    stub.StopBranch(pb.StopBranchRequest(branch=pb.BranchRef(branch_id=stopped.branch.id)),
                    timeout=120)
    root = daemon.mount_root / daemon.pool.name / "db" / db.database.id
    found = procfs.postmasters()
    main_pgdata = root / db.main_branch.id / "pgdata"
    pidfile = read_pidfile(main_pgdata)
    assert pidfile is not None
    assert found[str(main_pgdata)].pid == pidfile.pid
    assert str(root / stopped.branch.id / "pgdata") not in found
    listed = {b.name: b.state for b in stub.ListBranches(
        pb.ListBranchesRequest(database=db.database.name)).branches}
    assert listed["main"] == pb.BRANCH_STATE_RUNNING
    assert listed["quiet"] == pb.BRANCH_STATE_STOPPED
