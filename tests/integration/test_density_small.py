"""100 branches on one host: listing, creating and deleting stay right, and agree with ZFS.

Operations read the daemon's in-memory catalog (agent/catalog.py), kept
current by its own ZFS writes and read whole at start. To keep the suite
fast, most of the 100 branches are made by hand as stopped branches would be
(a `zfs snapshot` of main and a `zfs clone` with a branch's properties, which
is all a stopped branch is in ZFS); the daemon learns them at its restart,
as it learns any host's branches. No timing is asserted here:
benchmarks/bench_density.py measures.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, private_daemon, query, run

pytestmark = pytest.mark.integration

DB = "dense"
BY_HAND = 95
BY_API = 4  # with main and the hand-made ones: 100 branches


def zfs_branches(d: Daemon, database_id: str) -> dict[str, tuple[str, str]]:
    """Branch id -> (name, parent id), as ZFS holds them."""
    out = run("zfs", "get", "-H", "-r", "-d", "1", "-o", "name,property,value,source",
              "cygnet:kind,cygnet:id,cygnet:name,cygnet:parent",
              f"{d.pool.name}/cygnet/db/{database_id}").stdout
    props: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        name, prop, value, source = line.split("\t")
        if source == "local":
            props.setdefault(name, {})[prop] = value
    return {p["cygnet:id"]: (p["cygnet:name"], p.get("cygnet:parent", ""))
            for p in props.values() if p.get("cygnet:kind") == "branch"}


def listed(d: Daemon) -> dict[str, tuple[str, str]]:
    with d.stub() as s:
        branches = s.ListBranches(pb.ListBranchesRequest(database=DB), timeout=60).branches
    return {b.id: (b.name, b.parent_branch_id) for b in branches}


def make_by_hand(d: Daemon, db: pb.CreateDatabaseResponse, count: int) -> None:
    root = f"{d.pool.name}/cygnet/db/{db.database.id}"
    main = f"{root}/{db.main_branch.id}"
    snap_id = "sn" + secrets.token_hex(5)  # one branch point for all: clones are what count
    run("zfs", "snapshot", "-o", "cygnet:snapshot-kind=branch-point",
        "-o", f"cygnet:id={snap_id}", "-o", "cygnet:name=by hand", f"{main}@{snap_id}")
    clones = []
    for i in range(count):
        branch_id = "br" + secrets.token_hex(5)
        props = {"kind": "branch", "id": branch_id, "name": f"hand{i}",
                 "database": db.database.id, "parent": db.main_branch.id,
                 "port": str(d.port_min + 100 + i), "desired": "stopped", "phase": "ready",
                 "created": f"{time.time():.3f}"}
        clones.append(["zfs", "clone", *[a for k, v in props.items()
                                         for a in ("-o", f"cygnet:{k}={v}")],
                       f"{main}@{snap_id}", f"{root}/{branch_id}"])
    for argv in clones:  # one at a time: zfs-fuse has hung under concurrent clones
        run(*argv)


@pytest.fixture(scope="module")
def dense() -> Iterator[tuple[Daemon, pb.CreateDatabaseResponse]]:
    with private_daemon("dn", 56800, "3G") as d:
        with d.stub() as s:
            db = s.CreateDatabase(pb.CreateDatabaseRequest(name=DB, size_class="nano"),
                                  timeout=120)
            for i in range(BY_API):
                s.CreateBranch(pb.CreateBranchRequest(database=DB, name=f"api{i}"), timeout=60)
        make_by_hand(d, db, BY_HAND)
        d.stop()
        # A start that reads ZFS whole: from the catalog kept on disk, which knows
        # nothing of branches made by hand, the background read would find them.
        (d.base / "state" / "catalog.json").unlink()
        d.start()
        yield d, db


def test_listing_100_branches_matches_zfs(dense: tuple[Daemon, pb.CreateDatabaseResponse]
                                          ) -> None:
    d, db = dense
    seen = listed(d)
    assert len(seen) == 1 + BY_API + BY_HAND
    assert seen == zfs_branches(d, db.database.id)
    with d.stub() as s:
        states = {b.name: b.state for b in s.ListBranches(
            pb.ListBranchesRequest(database=DB)).branches}
        assert states["hand7"] == pb.BRANCH_STATE_STOPPED
        assert states["api2"] == pb.BRANCH_STATE_RUNNING
        status = s.GetHostStatus(pb.GetHostStatusRequest())
    assert status.branch_count == 1 + BY_API + BY_HAND


def test_create_start_and_delete_at_100_stay_consistent_with_zfs(
        dense: tuple[Daemon, pb.CreateDatabaseResponse]) -> None:
    d, db = dense
    with d.stub() as s:
        made = s.CreateBranch(pb.CreateBranchRequest(database=DB, name="new", parent="hand5"),
                              timeout=60)
        assert query(made.connection, "select 1") == [(1,)]
        assert listed(d) == zfs_branches(d, db.database.id)
        assert listed(d)[made.branch.id] == ("new", s.GetBranch(pb.GetBranchRequest(
            branch=pb.BranchRef(database=DB, name="hand5"))).id)
        started = s.StartBranch(pb.StartBranchRequest(
            branch=pb.BranchRef(database=DB, name="hand9")), timeout=60)
        assert started.state == pb.BRANCH_STATE_RUNNING
        conn = s.GetConnection(pb.GetConnectionRequest(branch=pb.BranchRef(branch_id=started.id)))
        assert query(conn, "select 1") == [(1,)]
        s.DeleteBranch(pb.DeleteBranchRequest(branch=pb.BranchRef(database=DB, name="hand5"),
                                              cascade=True), timeout=60)
        s.ResetBranch(pb.ResetBranchRequest(branch=pb.BranchRef(database=DB, name="api1")),
                      timeout=60)
    after = listed(d)
    assert "hand5" not in {n for n, _ in after.values()}
    assert "new" not in {n for n, _ in after.values()}
    assert len(after) == 1 + BY_API + BY_HAND - 1
    assert after == zfs_branches(d, db.database.id)
