"""Pruning of archived WAL by retention, on a real repository in a temporary
directory: what a retained point still needs stays, the rest goes; and a
deleted branch's spool is emptied into the repository."""

from __future__ import annotations

import os
from pathlib import Path

from cygnet.agent import archive
from cygnet.agent.archive_janitor import sweep
from cygnet.agent.archive_prune import prune_database
from cygnet.agent.config import AgentConfig
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, SnapshotRecord
from cygnet.wal import spool
from cygnet.wal.lsn import SEGMENT_SIZE, segment_name
from cygnet.wal.plan import load_chain
from cygnet.wal.points import WalPoint
from cygnet.wal.prune import Point, floors, prunable
from cygnet.wal.repo import Generation, WalRepository

S = SEGMENT_SIZE


def _branch(bid: str, parent: str = "", fork: str = "") -> BranchRecord:
    return BranchRecord(bid, "main" if not parent else bid, "db1", parent, f"p/{bid}", None,
                        5432, "running", "ready", 0.0, "", 0, 0, fork=fork)


def _snap(branch: str, kind: str, point: WalPoint) -> SnapshotRecord:
    return SnapshotRecord(f"sn{point.low}", "s", f"p/{branch}@x", branch, kind, point.time, 0,
                          0, wal_point=point.text())


def _fill(repo: WalRepository, branch: str, gen: int, numbers: range, t0: float = 100.0
          ) -> None:
    for n in numbers:  # segment n last written at t0 + n
        repo.store(branch, gen, segment_name(1, n * S), b"wal%d" % n, t0 + n)


def test_only_wal_below_every_point_and_before_retention_goes(tmp_path: Path) -> None:
    repo = WalRepository(tmp_path)
    g = Generation("main", 1, 0, "", 0, "db1", "shop", "main", 0.0)
    repo.begin(g)
    _fill(repo, "main", 1, range(0, 10))
    chain = load_chain(repo, g)
    # A named snapshot at segment 6 and retention keeping points from t=104 on.
    floor = floors([Point(6 * S + 100, (g.key,))])
    gone = {o.name for o in prunable(chain, floor, retained_since=104.0)}
    assert gone == {segment_name(1, n * S) for n in range(0, 4)}  # mtimes 100-103
    # The named snapshot bounds it even when retention would allow more.
    gone = {o.name for o in prunable(chain, floor, retained_since=1e9)}
    assert gone == {segment_name(1, n * S) for n in range(0, 6)}  # segment 6 holds the point
    # No retained point recorded yet, or no point on a generation: nothing goes.
    assert prunable(chain, floor, retained_since=0.0) == []
    assert prunable(chain, {}, retained_since=1e9) == []


def test_a_childs_point_keeps_its_parents_wal_below_the_fork(tmp_path: Path) -> None:
    floor = floors([Point(9 * S, (("main", 1),)),
                    Point(3 * S, (("child", 1), ("main", 1)))])
    assert floor == {("main", 1): 3 * S, ("child", 1): 3 * S}


def test_prune_database_removes_files_and_keeps_a_branch_points_wal(tmp_path: Path) -> None:
    config = AgentConfig(pools=("p",), state_dir=tmp_path)
    repo = archive.repository(config)
    main = _branch("main")
    fork = WalPoint(5 * S + 40, 5 * S + 80, 105.0)
    child = _branch("child", parent="main", fork=f"1:{fork.text()}")
    main.snapshots = [_snap("main", "branch-point", fork),
                      _snap("main", "auto", WalPoint(8 * S + 40, 8 * S + 80, 108.0))]
    db = DatabaseRecord("db1", "shop", "p/db1", "p", "17", "s", "ready", 0.0, "",
                        {"main": main, "child": child})
    for b in (main, child):
        archive.ensure_generation(config, db, b)
    _fill(repo, "main", 1, range(0, 10))
    _fill(repo, "child", 1, range(5, 8), t0=200.0)
    done = prune_database(config, db, retained_since=108.0)
    left = set(repo.objects("main", 1))
    # The branch point (segment 5) bounds it, though retention starts at segment 8.
    assert left == {segment_name(1, n * S) for n in range(5, 10)}
    assert done.files == 5 and len(repo.objects("child", 1)) == 3
    # Without the branch point, retention's point at segment 8 is the bound.
    main.snapshots = main.snapshots[1:]
    del db.branches["child"]
    prune_database(config, db, retained_since=108.0)
    assert set(repo.objects("main", 1)) == {segment_name(1, n * S) for n in range(8, 10)}


def test_a_deleted_branchs_spool_is_stored_then_removed(tmp_path: Path) -> None:
    repo = WalRepository(tmp_path / "repo")
    root = tmp_path / "spool"
    d = spool.spool_dir(root, "br1", 2)
    d.mkdir(parents=True)
    (d / segment_name(1, S)).write_bytes(b"last words")
    other = spool.spool_dir(root, "br2", 1)
    other.mkdir(parents=True)
    (other / segment_name(1, S)).write_bytes(b"not mine")
    assert spool.drop_branch(root, repo, "br1")
    assert not (root / "br1").exists() and (other / segment_name(1, S)).exists()
    assert WalRepository.read(repo.objects("br1", 2)[segment_name(1, S)].path) == b"last words"


def test_a_gone_branchs_wal_goes_after_retention_unless_a_live_chain_needs_it(
        tmp_path: Path) -> None:
    repo = WalRepository(tmp_path)
    day = 86400.0
    now = 100 * day
    # br_old: deleted long ago. br_recent: deleted, last written an hour ago.
    # br_base: deleted long ago, but the live br_live continues its generation.
    for bid, base, written in (("br_old", "", now - 9 * day), ("br_recent", "", now - 3600),
                               ("br_base", "", now - 9 * day),
                               ("br_live", "br_base", now - 9 * day)):
        repo.begin(Generation(bid, 1, 0, base, 1 if base else 0, "db1", "shop", bid, 0.0))
        _fill(repo, bid, 1, range(1, 3), t0=written - 10)
        for meta in (tmp_path / "wal" / bid).rglob("*.json"):
            os.utime(meta, (written, written))
    needed = {("br_live", 1), ("br_base", 1)}
    done = sweep(repo, {"br_live"}, needed, keep_seconds=7 * day, now=now)
    assert (done.branches, done.files) == (1, 3)  # two segments and the generation record
    assert repo.branches() == ["br_base", "br_live", "br_recent"]
    assert sweep(repo, {"br_live"}, needed, keep_seconds=7 * day, now=now).branches == 0
