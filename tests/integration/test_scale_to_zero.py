"""Scale to zero: suspend, resume, the idle suspender and wakes (agent/scale.py).

Real cygnetd, real zfs-fuse, real Postgres; the session daemon's branches are
never suspended for idleness unless created with suspend_after (harness.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import Daemon, private_daemon, query, run
from tests.integration.test_cli_support import cygnet

pytestmark = pytest.mark.integration

Stub = pb_grpc.AgentStub
Shop = pb.CreateDatabaseResponse

SUSPENDED, RUNNING = pb.BRANCH_STATE_SUSPENDED, pb.BRANCH_STATE_RUNNING
READY_LINE = "database system is ready to accept connections"


@pytest.fixture(scope="module")
def shop(daemon: Daemon) -> Iterator[pb.CreateDatabaseResponse]:
    with daemon.stub() as stub:
        resp = stub.CreateDatabase(pb.CreateDatabaseRequest(name=unique("sz"),
                                                            size_class="nano"), timeout=120)
        query(resp.connection, "create table t(v text); insert into t values ('kept')")
        yield resp
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=resp.database.id), timeout=120)


def new_branch(stub: Stub, shop: pb.CreateDatabaseResponse, name: str,
               suspend_after: int | None = None) -> pb.Branch:
    req = pb.CreateBranchRequest(database=shop.database.name, name=name)
    if suspend_after is not None:
        req.suspend_after.seconds = suspend_after
    made: pb.CreateBranchResponse = stub.CreateBranch(req, timeout=120)
    return made.branch


def ref(b: pb.Branch) -> pb.BranchRef:
    return pb.BranchRef(branch_id=b.id)


def get(stub: Stub, b: pb.Branch) -> pb.Branch:
    got: pb.Branch = stub.GetBranch(pb.GetBranchRequest(branch=ref(b)), timeout=30)
    return got


def connection(stub: Stub, b: pb.Branch) -> pb.Connection:
    conn: pb.Connection = stub.GetConnection(pb.GetConnectionRequest(branch=ref(b)), timeout=30)
    return conn


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout:.0f}s: {what}")
        time.sleep(0.1)


def resumed(stub: Stub, b: pb.Branch) -> bool:
    """ResumeBranch; False while the last failure is still the answer (for a second)."""
    try:
        woken: pb.Branch = stub.ResumeBranch(pb.ResumeBranchRequest(branch=ref(b)), timeout=60)
        return woken.state == RUNNING
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED)
        return False


def files(daemon: Daemon, b: pb.Branch) -> Path:
    (found,) = (daemon.mount_root / daemon.pool.name / "db" / b.database_id).glob(f"{b.id}*")
    return found


def ready_lines(daemon: Daemon, b: pb.Branch) -> int:
    return (files(daemon, b) / "log" / "postgres.log").read_text(errors="replace").count(
        READY_LINE)


def port_property(daemon: Daemon, b: pb.Branch) -> str:
    dataset = f"{daemon.pool.name}/cygnet/db/{b.database_id}/{files(daemon, b).name}"
    return run("zfs", "get", "-H", "-o", "value", "cygnet:port", dataset).stdout.strip()


def test_suspend_frees_the_port_and_resume_keeps_the_data(stub: Stub, daemon: Daemon,
                                                          shop: Shop) -> None:
    b = new_branch(stub, shop, "nap")
    query(connection(stub, b), "insert into t values ('in-branch')")
    suspended = stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(b)), timeout=60)
    assert (suspended.state, suspended.port) == (SUSPENDED, 0)
    assert port_property(daemon, b) == "-"  # no port held, in ZFS either
    assert not (files(daemon, b) / "pgdata" / "postmaster.pid").exists()
    listed = stub.ListBranches(pb.ListBranchesRequest(database=shop.database.id), timeout=30)
    assert {x.id: x.state for x in listed.branches}[b.id] == SUSPENDED
    # Suspending again changes nothing.
    assert stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(b)), timeout=60).state \
        == SUSPENDED

    resumed = stub.ResumeBranch(pb.ResumeBranchRequest(branch=ref(b)), timeout=60)
    assert resumed.state == RUNNING and resumed.port
    assert port_property(daemon, b) == str(resumed.port)
    rows = query(connection(stub, b), "select v from t order by v")
    assert rows == [("in-branch",), ("kept",)]
    replay = stub.WatchEvents(pb.WatchEventsRequest(from_oldest=True, follow=False), timeout=30)
    kinds = [(e.kind, e.reason) for e in replay if e.branch_id == b.id]
    assert ("suspended", "asked by an operator") in kinds
    assert kinds[-1] == ("resumed", "asked by an operator")


def mounted(daemon: Daemon, b: pb.Branch) -> str:
    dataset = f"{daemon.pool.name}/cygnet/db/{b.database_id}/{files(daemon, b).name}"
    return run("zfs", "get", "-H", "-o", "value", "mounted", dataset).stdout.strip()


def test_a_suspended_branch_is_parked_and_mounted_when_needed(stub: Stub, daemon: Daemon,
                                                              shop: Shop) -> None:
    b = new_branch(stub, shop, "parked")
    query(connection(stub, b), "insert into t values ('parked')")
    stub.SetBranchConfig(pb.SetBranchConfigRequest(branch=ref(b),
                                                   settings={"work_mem": "5MB"}), timeout=60)
    stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(b)), timeout=60)
    assert mounted(daemon, b) == "no"  # parked: no mount held (park_suspended)
    # Calls that read its files mount it; the supervisor parks it again.
    config = stub.GetBranchConfig(pb.GetBranchConfigRequest(branch=ref(b)), timeout=30)
    assert {s.name: s.value for s in config.settings}["work_mem"] == "5MB"
    stub.CreateSnapshot(pb.CreateSnapshotRequest(branch=ref(b), name="while-parked"),
                        timeout=60)
    wait_for("the branch parked again", lambda: mounted(daemon, b) == "no")
    # A child of the parked branch: its branch point records where the WAL ends.
    child = stub.CreateBranch(pb.CreateBranchRequest(
        database=shop.database.name, name="of-parked", parent="parked"), timeout=120).branch
    assert query(connection(stub, child), "select count(*) from t where v = 'parked'") == [(1,)]
    snaps = stub.ListSnapshots(pb.ListSnapshotsRequest(branch=ref(b)), timeout=30).snapshots
    assert "while-parked" in [x.name for x in snaps]
    # A wake mounts it.
    assert stub.ResumeBranch(pb.ResumeBranchRequest(branch=ref(b)), timeout=60).state == RUNNING
    assert mounted(daemon, b) == "yes"
    assert query(connection(stub, b), "show work_mem") == [("5MB",)]
    # An operator's stop of a parked branch mounts it and keeps it so (docs/operations.md).
    stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(b)), timeout=60)
    assert mounted(daemon, b) == "no"
    stub.StopBranch(pb.StopBranchRequest(branch=ref(b)), timeout=60)
    time.sleep(2.5)  # more than two supervisor rounds
    assert mounted(daemon, b) == "yes"
    assert (files(daemon, b) / "log" / "postgres.log").is_file()
    assert stub.StartBranch(pb.StartBranchRequest(branch=ref(b)), timeout=60).state == RUNNING


def test_cli_suspend_resume_and_the_state_in_list_and_tree(stub: Stub, daemon: Daemon,
                                                           shop: Shop) -> None:
    b = new_branch(stub, shop, "cli-nap")
    label = f"{shop.database.name}/cli-nap"
    shown = cygnet(daemon, "branch", "suspend", label, "--json").json()
    assert (shown["state"], shown["port"]) == ("suspended", None)
    listing = cygnet(daemon, "branch", "list", shop.database.name).out
    assert any("cli-nap" in line and "suspended" in line for line in listing.splitlines())
    tree = cygnet(daemon, "branch", "tree", shop.database.name).out
    assert any("cli-nap" in line and "suspended" in line for line in tree.splitlines())
    assert cygnet(daemon, "branch", "resume", label, "--json").json()["state"] == "running"
    assert get(stub, b).state == RUNNING
    updated = cygnet(daemon, "branch", "update", label, "--suspend-after", "15m", "--json")
    assert updated.json()["suspend_after_seconds"] == 900
    assert get(stub, b).suspend_after.seconds == 900
    back = cygnet(daemon, "branch", "update", label, "--suspend-after", "default", "--json")
    assert back.json()["suspend_after_seconds"] == 0  # the test daemons' default: never


def test_idle_branches_are_suspended_and_connected_ones_are_not(stub: Stub, shop: Shop) -> None:
    idle = new_branch(stub, shop, "idle", suspend_after=1)
    busy = new_branch(stub, shop, "busy")
    assert (idle.suspend_after.seconds, busy.suspend_after.seconds) == (1, 0)  # 0: the host's
    update = pb.UpdateBranchRequest(branch=ref(busy))
    update.suspend_after.seconds = 1
    assert stub.UpdateBranch(update, timeout=30).suspend_after.seconds == 1
    with psycopg.connect(connection(stub, busy).uri, autocommit=True, connect_timeout=10):
        wait_for("the idle branch suspended", lambda: get(stub, idle).state == SUSPENDED)
        time.sleep(1.5)  # more than the timeout and several idle checks
        assert get(stub, busy).state == RUNNING
    wait_for("the busy branch suspended once its client left",
             lambda: get(stub, busy).state == SUSPENDED)


def test_fifty_concurrent_wakes_start_it_once(stub: Stub, daemon: Daemon, shop: Shop) -> None:
    b = new_branch(stub, shop, "herd")
    before = ready_lines(daemon, b)  # the log is on its dataset, parked once suspended
    stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(b)), timeout=60)
    calls = [stub.ResumeBranch.future(pb.ResumeBranchRequest(branch=ref(b)), timeout=120)
             for _ in range(50)]
    results = [c.result() for c in calls]
    assert {(r.state, r.port) for r in results} == {(RUNNING, results[0].port)}
    assert results[0].port
    assert ready_lines(daemon, b) - before == 1
    assert query(connection(stub, b), "select count(*) from t") == [(1,)]


def test_wakes_during_a_suspend_leave_it_running(stub: Stub, daemon: Daemon, shop: Shop) -> None:
    b = new_branch(stub, shop, "storm")
    query(connection(stub, b), "insert into t values ('in-storm')")
    # A stopped checkpointer holds the suspend's shutdown checkpoint, so the storm
    # always lands while the branch is SUSPENDING, however fast this host is.
    checkpointer = child_process(files(daemon, b), "checkpointer")
    os.kill(checkpointer, signal.SIGSTOP)
    try:
        suspend = stub.SuspendBranch.future(pb.SuspendBranchRequest(branch=ref(b)), timeout=120)
        wait_for("the branch suspending", lambda: suspend.done()
                 or get(stub, b).state == pb.BRANCH_STATE_SUSPENDING)
        storm = [stub.ResumeBranch.future(pb.ResumeBranchRequest(branch=ref(b)), timeout=120)
                 for _ in range(20)]
        time.sleep(0.5)  # the storm's calls reach cygnetd
        assert not suspend.done(), "the suspend ended before the storm: nothing was tested"
    finally:
        os.kill(checkpointer, signal.SIGCONT)
    assert suspend.result().state == SUSPENDED  # the suspend itself completed
    ports = {c.result().port for c in storm}
    assert len(ports) == 1 and all(c.result().state == RUNNING for c in storm)
    after = get(stub, b)
    assert (after.state, after.port) == (RUNNING, ports.pop())
    assert ("in-storm",) in query(connection(stub, b), "select v from t")


def child_process(dataset_root: Path, title: str) -> int:
    """The pid of the branch's postmaster child whose process title names `title`."""
    postmaster = (dataset_root / "pgdata" / "postmaster.pid").read_text().split()[0]
    (pid,) = run("pgrep", "-P", postmaster, "-f", title).stdout.split()
    return int(pid)


def test_a_failed_wake_says_why_and_leaves_it_suspended(stub: Stub, daemon: Daemon,
                                                        shop: Shop) -> None:
    if "HugePages_Total:       0" not in Path("/proc/meminfo").read_text():
        pytest.skip("this host has huge pages: huge_pages = on would not stop a postmaster")
    b = new_branch(stub, shop, "broken")
    query(connection(stub, b), "alter system set huge_pages = on")  # kept down from now on
    stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(b)), timeout=60)
    with pytest.raises(grpc.RpcError) as failed:
        stub.ResumeBranch(pb.ResumeBranchRequest(branch=ref(b)), timeout=60)
    assert failed.value.code() == grpc.StatusCode.ABORTED, failed.value.details()
    assert "broken did not start" in failed.value.details()
    assert "huge" in failed.value.details().lower()  # the server log's reason
    after = get(stub, b)
    assert (after.state, after.port) == (SUSPENDED, 0)
    assert "last wake failed" in after.state_message
    auto = files(daemon, b) / "pgdata" / "postgresql.auto.conf"
    auto.write_text("".join(line for line in auto.read_text().splitlines(keepends=True)
                            if "huge_pages" not in line))
    wait_for("the repaired branch woken", lambda: resumed(stub, b))


def test_a_wake_on_a_full_database_says_so(stub: Stub, daemon: Daemon) -> None:
    db = stub.CreateDatabase(pb.CreateDatabaseRequest(name=unique("szq"), size_class="nano",
                                                      quota_bytes=2**30), timeout=120)
    try:
        main = db.main_branch
        stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(main)), timeout=60)
        dataset = f"{daemon.pool.name}/cygnet/db/{db.database.id}"
        used = int(run("zfs", "get", "-H", "-p", "-o", "value", "used", dataset).stdout)
        run("zfs", "set", f"quota={used + 16 * 2**20}", dataset)  # 16 MiB left: full
        with pytest.raises(grpc.RpcError) as full:
            stub.ResumeBranch(pb.ResumeBranchRequest(branch=ref(main)), timeout=60)
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, full.value.details()
        assert "did not start: not enough free space" in full.value.details()
        after = get(stub, main)
        assert (after.state, after.port) == (SUSPENDED, 0)
        run("zfs", "set", f"quota={2**30}", dataset)
        wait_for("the branch woken with room again", lambda: resumed(stub, main))
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=db.database.id), timeout=120)


def test_a_stopped_branch_is_not_woken(stub: Stub, shop: Shop) -> None:
    b = new_branch(stub, shop, "halt")
    stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(b)), timeout=60)
    stub.StopBranch(pb.StopBranchRequest(branch=ref(b)), timeout=60)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ResumeBranch(pb.ResumeBranchRequest(branch=ref(b)), timeout=60)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "stopped by an operator" in refused.value.details()
    started = stub.StartBranch(pb.StartBranchRequest(branch=ref(b)), timeout=60)
    assert started.state == RUNNING and started.port  # a port again
    assert query(connection(stub, b), "select 1") == [(1,)]


def test_replicas_and_unarchived_wal_keep_it_running(stub: Stub, daemon: Daemon,
                                                     shop: Shop) -> None:
    b = new_branch(stub, shop, "wal", suspend_after=1)
    uri = connection(stub, b).uri + "&replication=database"
    with psycopg.connect(uri, autocommit=True, connect_timeout=10):  # a logical walsender
        with pytest.raises(grpc.RpcError) as replica:
            stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(b)), timeout=60)
        assert replica.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "1 replica(s) attached" in replica.value.details()
    # A segment Postgres has still to archive (archive_status/*.ready).
    ready = files(daemon, b) / "pgdata" / "pg_wal" / "archive_status" / \
        "00000001000000000000FFFE.ready"
    ready.touch()
    try:
        with pytest.raises(grpc.RpcError) as wal:
            stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(b)), timeout=60)
        assert wal.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "1 WAL segment(s) still to archive" in wal.value.details()
        time.sleep(1.5)  # idle past its timeout, but not suspended
        assert get(stub, b).state == RUNNING
    finally:
        ready.unlink()
    wait_for("the idle branch suspended", lambda: get(stub, b).state == SUSPENDED)


@pytest.mark.parametrize("duration", [Duration(seconds=-5), Duration(seconds=1, nanos=5),
                                      Duration(seconds=400 * 86400)])
def test_a_bad_suspend_after_names_the_field(stub: Stub, shop: Shop, duration: Duration) -> None:
    req = pb.CreateBranchRequest(database=shop.database.name, name="never-made")
    req.suspend_after.CopyFrom(duration)
    with pytest.raises(grpc.RpcError) as bad:
        stub.CreateBranch(req, timeout=30)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details().startswith("suspend_after:")


def test_a_suspend_cut_short_is_finished_at_restart() -> None:
    """A crash between a suspend's steps: the reconciler stops what should not run and
    takes the port back from a suspended branch (a daemon of its own, killed with -9)."""
    with private_daemon("sz", 62000, "2G", unix_only=True) as d, d.stub() as stub:
        db = stub.CreateDatabase(pb.CreateDatabaseRequest(name="lull", size_class="nano"),
                                 timeout=120)
        stopped_early = new_branch(stub, db, "stopped-early")  # port not yet dropped
        stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref(stopped_early)), timeout=60)
        dataset = f"{d.pool.name}/cygnet/db/{db.database.id}/{stopped_early.id}"
        run("zfs", "set", f"cygnet:port={stopped_early.port}", dataset)
        marked = new_branch(stub, db, "marked")  # desired written, postmaster still up
        marked_dataset = f"{d.pool.name}/cygnet/db/{db.database.id}/{marked.id}"
        run("zfs", "set", "cygnet:desired=suspended", marked_dataset)
        d.kill9()
        # The writes by hand stand for cygnetd's own, whose names its journal holds
        # before they start (agent/catalog_file.py): the start reads them again.
        journal = d.base / "state" / "catalog.journal"
        if journal.exists():
            with journal.open("a") as f:
                f.write(f"N {dataset}\nN {marked_dataset}\n")
        d.start()
        for b in (stopped_early, marked):
            after = get(stub, b)
            assert (after.state, after.port) == (SUSPENDED, 0), b.name
            assert port_property(d, b) == "-"
            assert not (files(d, b) / "pgdata" / "postmaster.pid").exists()
            resumed = stub.ResumeBranch(pb.ResumeBranchRequest(branch=ref(b)), timeout=60)
            assert resumed.state == RUNNING
            assert query(connection(stub, b), "select 1") == [(1,)]
