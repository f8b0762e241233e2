"""PromoteBranch: a branch's data becomes main's; main keeps its name, port and password.

`zfs promote` moves snapshots (and with them their clones' parents) between
datasets, so every test checks the lineage Cygnet reports against ZFS itself.
The crash tests run a daemon of their own and stop it at a step of the swap
(CYGNET_TEST_SWAP_CRASH_AT: the daemon exits as a kill -9 would stop it).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import Daemon, private_daemon, query, run

pytestmark = pytest.mark.integration

Stub = pb_grpc.AgentStub


def ref(db: str, name: str = "") -> pb.BranchRef:
    return pb.BranchRef(database=db, name=name)


def branches(stub: Stub, db: str) -> dict[str, pb.Branch]:
    listed = stub.ListBranches(pb.ListBranchesRequest(database=db)).branches
    return {b.name: b for b in listed}


def marker(stub: Stub, db: str, name: str = "") -> str:
    conn = stub.GetConnection(pb.GetConnectionRequest(branch=ref(db, name)))
    return str(query(conn, "select v from marker")[0][0])


def write_marker(stub: Stub, db: str, name: str, value: str) -> None:
    conn = stub.GetConnection(pb.GetConnectionRequest(branch=ref(db, name)))
    query(conn, f"drop table if exists marker; create table marker as select '{value}' as v")


def zfs_lineage(d: Daemon, database_id: str) -> dict[str, tuple[str, str]]:
    """Branch id -> (cygnet:parent, id of the branch holding its ZFS origin), from ZFS."""
    root = f"{d.pool.name}/cygnet/db/{database_id}"
    out = run("zfs", "get", "-H", "-r", "-d", "1", "-o", "name,property,value,source",
              "origin,cygnet:id,cygnet:parent,cygnet:replaces,cygnet:replaced-by,cygnet:kind",
              root).stdout
    props: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        name, prop, value, source = line.split("\t")
        if prop == "origin" or source == "local":
            props.setdefault(name, {})[prop] = value
    ids = {n: p["cygnet:id"] for n, p in props.items() if p.get("cygnet:kind") == "branch"}
    lineage = {}
    for name, p in props.items():
        if p.get("cygnet:kind") != "branch":
            continue
        assert "cygnet:replaces" not in p and "cygnet:replaced-by" not in p, (name, p)
        owner = ids.get(p.get("origin", "-").split("@")[0], "")
        lineage[p["cygnet:id"]] = (p.get("cygnet:parent", ""), owner)
    return lineage


def assert_lineage_matches_zfs(d: Daemon, stub: Stub, db: str) -> None:
    listed = branches(stub, db)
    database_id = next(iter(listed.values())).database_id
    lineage = zfs_lineage(d, database_id)
    assert set(lineage) == {b.id for b in listed.values()}, "a branch without a dataset or back"
    for b in listed.values():
        parent, owner = lineage[b.id]
        assert parent == b.parent_branch_id
        if owner:  # a clone of one of this database's branches: that is its parent
            assert owner == b.parent_branch_id, (b.name, owner, b.parent_branch_id)
    (main,) = [b for b in listed.values() if not b.parent_branch_id]
    assert main.name == "main"


def test_promote_keeps_main_identity_and_reparents_siblings(daemon: Daemon, stub: Stub) -> None:
    name = unique("pr")
    db = stub.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                             timeout=120)
    write_marker(stub, name, "main", "old-main")
    stub.CreateBranch(pb.CreateBranchRequest(database=name, name="early"), timeout=60)
    chosen = stub.CreateBranch(pb.CreateBranchRequest(database=name, name="chosen"),
                               timeout=60).branch
    stub.CreateBranch(pb.CreateBranchRequest(database=name, name="late"), timeout=60)
    stub.CreateBranch(pb.CreateBranchRequest(database=name, name="grandchild",
                                             parent="chosen"), timeout=60)
    write_marker(stub, name, "chosen", "promoted")
    write_marker(stub, name, "main", "old-main-after")
    before = branches(stub, name)
    try:
        res = stub.PromoteBranch(pb.PromoteBranchRequest(branch=ref(name, "chosen")),
                                 timeout=120)
        # Main keeps id, port and password; it now serves the promoted data.
        assert res.main.id == db.main_branch.id and res.main.port == db.main_branch.port
        assert res.main.state == pb.BRANCH_STATE_RUNNING
        assert query(db.connection, "select v from marker") == [("promoted",)]
        assert res.old_main.name.startswith("main_before_")
        assert res.old_main.state == pb.BRANCH_STATE_STOPPED
        assert res.downtime.ToTimedelta().total_seconds() > 0
        after = branches(stub, name)
        assert "chosen" not in after and chosen.id not in {b.id for b in after.values()}
        assert set(after) == {"main", "early", "late", "grandchild", res.old_main.name}
        # `zfs promote` moved the snapshots made before the promoted one's branch point.
        assert after["early"].parent_branch_id == db.main_branch.id
        assert after["grandchild"].parent_branch_id == db.main_branch.id
        assert after["late"].parent_branch_id == res.old_main.id
        assert after[res.old_main.name].parent_branch_id == db.main_branch.id
        assert after["early"].port == before["early"].port
        assert_lineage_matches_zfs(daemon, stub, name)
        # The old main's data, kept: it starts and has its last writes.
        stub.StartBranch(pb.StartBranchRequest(branch=ref(name, res.old_main.name)),
                         timeout=60)
        assert marker(stub, name, res.old_main.name) == "old-main-after"
        # The new main branches, resets its children and serves as main.
        stub.CreateBranch(pb.CreateBranchRequest(database=name, name="next"), timeout=60)
        assert marker(stub, name, "next") == "promoted"
        stub.ResetBranch(pb.ResetBranchRequest(branch=ref(name, "early")), timeout=60)
        assert marker(stub, name, "early") == "promoted"
        assert_lineage_matches_zfs(daemon, stub, name)
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)
    assert not [d for d in daemon.pool.datasets() if db.database.id in d]


def test_promote_can_drop_the_old_main_and_refuses_what_it_would_orphan(
        daemon: Daemon, stub: Stub) -> None:
    name = unique("pd")
    db = stub.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                             timeout=120)
    try:
        stub.CreateBranch(pb.CreateBranchRequest(database=name, name="fix"), timeout=60)
        write_marker(stub, name, "fix", "fixed")
        stub.CreateBranch(pb.CreateBranchRequest(database=name, name="after"), timeout=60)
        with pytest.raises(grpc.RpcError) as refused:
            stub.PromoteBranch(pb.PromoteBranchRequest(branch=ref(name, "fix"),
                                                       drop_old_main=True), timeout=60)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "after" in refused.value.details()
        assert set(branches(stub, name)) == {"main", "fix", "after"}  # nothing changed
        assert branches(stub, name)["fix"].state == pb.BRANCH_STATE_RUNNING
        stub.DeleteBranch(pb.DeleteBranchRequest(branch=ref(name, "after")), timeout=60)
        res = stub.PromoteBranch(pb.PromoteBranchRequest(branch=ref(name, "fix"),
                                                         drop_old_main=True), timeout=120)
        assert not res.HasField("old_main")
        assert set(branches(stub, name)) == {"main"}
        assert query(db.connection, "select v from marker") == [("fixed",)]
        datasets = [d for d in daemon.pool.datasets() if db.database.id in d and "@" not in d]
        assert len(datasets) == 2, datasets  # the database and main's one dataset
        with pytest.raises(grpc.RpcError) as main_again:
            stub.PromoteBranch(pb.PromoteBranchRequest(branch=ref(name, "main")), timeout=60)
        assert main_again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)


def test_promoting_an_upgraded_branch_upgrades_the_database(daemon: Daemon, stub: Stub) -> None:
    name = unique("pu")
    db = stub.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano",
                                                      postgres_version="15"), timeout=120)
    try:
        write_marker(stub, name, "main", "data")
        stub.CreateBranch(pb.CreateBranchRequest(database=name, name="other"), timeout=60)
        stub.CreateBranch(pb.CreateBranchRequest(database=name, name="pg18", upgrade_to="18"),
                          timeout=300)
        res = stub.PromoteBranch(pb.PromoteBranchRequest(branch=ref(name, "pg18")),
                                 timeout=120)
        assert res.main.postgres_version == "18"
        assert stub.GetDatabase(pb.GetDatabaseRequest(database=name)).postgres_version == "18"
        assert query(db.connection, "select current_setting('server_version_num')::int "
                                    "/ 10000, (select v from marker)") == [(18, "data")]
        listed = branches(stub, name)
        assert listed[res.old_main.name].postgres_version == "15"
        assert listed["other"].postgres_version == "15"  # still its own major
        assert marker(stub, name, "other") == "data"
        assert_lineage_matches_zfs(daemon, stub, name)
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)


@pytest.fixture(scope="module")
def crashy() -> Iterator[Daemon]:
    with private_daemon("pc", 56600, "2G") as d:
        yield d


@pytest.mark.parametrize("step", ["committed", "started"])
def test_a_promote_cut_short_is_finished_by_the_reconciler(
        crashy: Daemon, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique("pk")
    with crashy.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                              timeout=120)
        s.CreateBranch(pb.CreateBranchRequest(database=name, name="sib"), timeout=60)
        s.CreateBranch(pb.CreateBranchRequest(database=name, name="b"), timeout=60)
        write_marker(s, name, "b", "b-data")
    crashy.stop()
    monkeypatch.setenv("CYGNET_TEST_SWAP_CRASH_AT", step)
    crashy.start()
    with crashy.stub() as s, pytest.raises(grpc.RpcError):
        s.PromoteBranch(pb.PromoteBranchRequest(branch=ref(name, "b")), timeout=120)
    assert crashy.proc is not None and crashy.proc.wait(30) == 137
    monkeypatch.delenv("CYGNET_TEST_SWAP_CRASH_AT")
    crashy.start()
    with crashy.stub() as s:
        listed = branches(s, name)
        assert set(listed) - {"main", "sib"} == {n for n in listed if "_before_" in n}
        assert listed["main"].id == db.main_branch.id and listed["main"].port == db.main_branch.port
        assert listed["main"].state == pb.BRANCH_STATE_RUNNING
        assert query(db.connection, "select v from marker") == [("b-data",)]
        assert listed["sib"].parent_branch_id == db.main_branch.id
        assert_lineage_matches_zfs(crashy, s, name)
        s.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)
