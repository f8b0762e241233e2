"""Point-in-time branches and restores in place, through the real API: real
archiving (the C archive program, the spool, the repository), real recovery."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import Daemon, query

pytestmark = pytest.mark.integration

Stub = pb_grpc.AgentStub
Db = pb.CreateDatabaseResponse


def count(conn: pb.Connection) -> int:
    n = query(conn, "select count(*) from t")[0][0]
    assert isinstance(n, int)
    return n


def insert(conn: pb.Connection, n: int, tag: str) -> None:
    query(conn, f"insert into t select '{tag}' || g from generate_series(1, {n}) g")


def lsn(conn: pb.Connection) -> str:
    return str(query(conn, "select pg_current_wal_insert_lsn()::text")[0][0])


def ts(t: float) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(int(t * 1e9))
    return out


def at(stub: Stub, db: str, name: str, *, when: float = 0.0, lsn_text: str = "", parent: str = ""
       ) -> pb.CreateBranchResponse:
    req = pb.CreateBranchRequest(database=db, name=name, parent=parent, at_lsn=lsn_text)
    if when:
        req.at_time.CopyFrom(ts(when))
    made: pb.CreateBranchResponse = stub.CreateBranch(req, timeout=120)
    return made


def pause() -> float:
    """A moment strictly between two commits, on the host's clock."""
    time.sleep(0.05)
    t = time.time()
    time.sleep(0.05)
    return t


@pytest.fixture
def db(stub: Stub) -> pb.CreateDatabaseResponse:
    resp: pb.CreateDatabaseResponse = stub.CreateDatabase(
        pb.CreateDatabaseRequest(name=unique("pitr"), size_class="nano"), timeout=120)
    query(resp.connection, "create table t(v text)")
    insert(resp.connection, 10, "a")
    stub.CreateSnapshot(pb.CreateSnapshotRequest(
        branch=pb.BranchRef(database=resp.database.name), name="s1"), timeout=60)
    return resp


def test_branch_at_a_time_and_at_an_lsn(stub: Stub, db: Db) -> None:
    name = db.database.name
    insert(db.connection, 10, "b")
    t1 = pause()
    point = lsn(db.connection)
    insert(db.connection, 10, "c")
    by_time = at(stub, name, "by-time", when=t1)
    by_lsn = at(stub, name, "by-lsn", lsn_text=point)
    assert count(by_time.connection) == 20
    assert count(by_lsn.connection) == 20
    # The replay ran with recovery_shared_buffers_mb (1 GB), not nano's 16 MB, and
    # the branch keeps them until its next restart.
    assert query(by_time.connection, "show shared_buffers") == [("1GB",)]
    assert count(db.connection) == 30
    # Each is a branch of its own: it writes without touching main.
    insert(by_time.connection, 1, "x")
    assert count(by_time.connection) == 21 and count(db.connection) == 30
    history = stub.BranchHistory(pb.BranchHistoryRequest(
        branch=pb.BranchRef(database=name)), timeout=30)
    assert history.archiving and history.earliest.lsn and history.latest.lsn
    assert history.earliest.time.ToNanoseconds() <= ts(t1).ToNanoseconds()
    assert [s.name for s in history.snapshots if s.kind == "user"] == ["s1"]
    assert history.generations[0].generation == 1 and history.generations[0].files > 0


def test_out_of_range_names_the_window(stub: Stub, db: Db) -> None:
    name = db.database.name
    cases = {"future": dict(when=time.time() + 3600),
             "before": dict(when=time.time() - 86400 * 365),
             "lsn": dict(lsn_text="0/10")}
    for label, kwargs in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            at(stub, name, f"oor-{label}", **kwargs)  # type: ignore[arg-type]
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE, label
        assert "window" in err.value.details() or "recoverable" in err.value.details()
    branches = stub.ListBranches(pb.ListBranchesRequest(database=name)).branches
    assert [b.name for b in branches] == ["main"]


def test_branch_of_a_branch_reaches_back_before_its_fork(stub: Stub, db: Db) -> None:
    name = db.database.name
    insert(db.connection, 10, "b")
    t1 = pause()
    insert(db.connection, 10, "c")
    child = stub.CreateBranch(pb.CreateBranchRequest(database=name, name="child"), timeout=60)
    insert(child.connection, 5, "child")
    # Before the child existed: its history there is main's.
    early = at(stub, name, "early", when=t1, parent="child")
    assert count(early.connection) == 20
    # After its fork, a child that does not archive has nothing to recover from.
    with pytest.raises(grpc.RpcError) as err:
        at(stub, name, "late", when=time.time() - 0.01, parent="child")
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    # Promoted, the child's data is main's: main's archive goes on in a new
    # generation that continues the child's history (and, below its fork, main's).
    stub.PromoteBranch(pb.PromoteBranchRequest(branch=pb.BranchRef(database=name, name="child")),
                       timeout=120)
    history = stub.BranchHistory(pb.BranchHistoryRequest(branch=pb.BranchRef(database=name)),
                                 timeout=30)
    gens = [(g.branch_id, g.generation) for g in history.generations]
    assert gens == [(db.main_branch.id, 2), (child.branch.id, 1), (db.main_branch.id, 1)]


def test_reset_starts_a_generation_and_restore_in_place_keeps_the_old_state(stub: Stub,
                                                                            db: Db) -> None:
    name = db.database.name
    main = pb.BranchRef(database=name)
    insert(db.connection, 10, "b")  # 20, then back to the snapshot: 10
    stub.ResetBranch(pb.ResetBranchRequest(branch=main, snapshot="s1"), timeout=60)
    assert count(db.connection) == 10
    history = stub.BranchHistory(pb.BranchHistoryRequest(branch=main), timeout=30)
    gens = [(g.branch_id, g.generation) for g in history.generations]
    assert gens == [(db.main_branch.id, 2), (db.main_branch.id, 1)]
    insert(db.connection, 3, "new")  # 13: the same segment names as before, other WAL
    t1 = pause()
    insert(db.connection, 7, "later")  # 20
    restored = stub.RestoreBranch(pb.RestoreBranchRequest(branch=main, at_time=ts(t1)),
                                  timeout=120)
    assert restored.branch.id == db.main_branch.id
    assert restored.kept.name.startswith("main_before_")
    assert count(db.connection) == 13  # the same connection string
    assert [r[0] for r in query(db.connection, "select count(*) from t where v like 'b%'")] == [0]
    kept = stub.StartBranch(pb.StartBranchRequest(branch=pb.BranchRef(
        branch_id=restored.kept.id)), timeout=60)
    conn = stub.GetConnection(pb.GetConnectionRequest(branch=pb.BranchRef(branch_id=kept.id)))
    assert count(conn) == 20
    history = stub.BranchHistory(pb.BranchHistoryRequest(branch=main), timeout=30)
    assert history.generations[0].generation == 3


def test_cli_branch_at_a_time_history_and_refusals(daemon: Daemon, stub: Stub, db: Db) -> None:
    from tests.integration.test_cli_support import cygnet

    name = db.database.name
    insert(db.connection, 10, "b")
    t1 = pause()
    insert(db.connection, 10, "c")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t1)) + f".{int(t1 % 1 * 1e6):06d}+00"
    made = cygnet(daemon, "branch", "create", f"{name}/then", "--at", when, "--json").json()
    conn = stub.GetConnection(pb.GetConnectionRequest(branch=pb.BranchRef(
        branch_id=made["branch"]["id"])))
    assert count(conn) == 20
    history = cygnet(daemon, "branch", "history", name, "--json").json()
    assert history["archiving"] and history["earliest"]["lsn"] and history["latest"]["lsn"]
    refused = cygnet(daemon, "branch", "create", f"{name}/later", "--at", "2999-01-01 00:00:00Z",
                     expect=2)
    assert "in the future" in refused.err and "window" in refused.err
    naive = cygnet(daemon, "branch", "create", f"{name}/naive", "--at", "2026-01-01 10:00",
                   expect=2)
    assert "time zone" in naive.err
    both = cygnet(daemon, "branch", "restore", name, "--yes", expect=2)
    assert "--at" in both.err


def test_a_deleted_database_comes_back_from_the_repository(daemon: Daemon, stub: Stub,
                                                           db: Db) -> None:
    from tests.integration.backup_helpers import create_backup

    name = db.database.name
    made = create_backup(daemon, pb.BranchRef(database=name))
    history = stub.BranchHistory(pb.BranchHistoryRequest(
        branch=pb.BranchRef(database=name)), timeout=30)
    assert [(b.backup_id, b.branch) for b in history.backups] == [(made.id, "main")]
    insert(db.connection, 10, "b")
    t1 = pause()
    insert(db.connection, 10, "c")
    query(db.connection, "select pg_switch_wal()")  # the last commits reach the archive
    time.sleep(1.0)
    stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)
    # The deletion starts its backups' retention (agent/backup_janitor.py).
    deleted = json.loads((daemon.base / "state" / "backups" / "deleted-databases.json")
                         .read_text())
    assert time.time() - 120 < deleted[db.database.id] <= time.time()
    back = stub.RestoreDatabase(pb.RestoreDatabaseRequest(
        name=name, new_name=f"{name}-then", at_time=ts(t1)), timeout=300)
    assert back.database.name == f"{name}-then" and back.database.id != db.database.id
    assert count(back.connection) == 20
    with pytest.raises(grpc.RpcError) as err:
        stub.RestoreDatabase(pb.RestoreDatabaseRequest(name="never-existed"), timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_stopped_branchs_snapshot_can_start_a_recovery(stub: Stub, db: Db) -> None:
    name = db.database.name
    main = pb.BranchRef(database=name)
    stub.StopBranch(pb.StopBranchRequest(branch=main), timeout=60)
    stub.CreateSnapshot(pb.CreateSnapshotRequest(branch=main, name="cold"), timeout=60)
    stub.StartBranch(pb.StartBranchRequest(branch=main), timeout=120)
    conn = stub.GetConnection(pb.GetConnectionRequest(branch=main))
    insert(conn, 5, "d")
    point = lsn(conn)
    query(conn, "select pg_switch_wal()")  # the shutdown checkpoint's segment is archived
    deadline = time.time() + 30
    names: list[str] = []
    while time.time() < deadline and "cold" not in names:
        history = stub.BranchHistory(pb.BranchHistoryRequest(branch=main), timeout=30)
        names = [s.name for s in history.snapshots]
        time.sleep(0.3)
    assert "cold" in names  # its shutdown checkpoint is its recorded WAL point
    after = at(stub, name, "after-cold", lsn_text=point)
    assert count(after.connection) == 15


def test_a_setting_raised_after_the_snapshot_still_recovers(daemon: Daemon, stub: Stub,
                                                            db: Db) -> None:
    """The replay pauses at its target as a hot standby, which cannot replay WAL from
    a server with more max_connections than the clone's (raised after the snapshot):
    it pauses short of the target. Cygnet goes on as a plain recovery, never promoting
    there, which would lose what lies before the target."""
    name = db.database.name
    stub.SetBranchConfig(pb.SetBranchConfigRequest(
        branch=pb.BranchRef(database=name), settings={"max_connections": "60"},
        restart=True), timeout=120)
    insert(db.connection, 10, "b")
    t1 = pause()
    insert(db.connection, 10, "c")
    made = at(stub, name, "raised", when=t1)
    assert count(made.connection) == 20
    log = daemon.log_path.read_text(errors="replace")
    assert f"branch {made.branch.id}: the replay paused before its target" in log
    # The branch's files are the snapshot's, settings included.
    assert query(made.connection, "show max_connections") == [("20",)]
