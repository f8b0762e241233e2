"""Crash safety: kill -9 of cygnetd never stops a database, and a restart cleans up.

These tests run their own daemon (they kill it), on their own pool.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, postmaster_pids, private_daemon, query

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crashy() -> Iterator[Daemon]:
    with private_daemon("c", 55300, "4G") as d:
        yield d


def branches(d: Daemon) -> list[pb.Branch]:
    with d.stub() as s:
        return list(s.ListBranches(pb.ListBranchesRequest()).branches)


def assert_consistent(d: Daemon) -> None:
    """Every dataset belongs to a known branch, and one postmaster runs per running branch."""
    listed = branches(d)
    assert all(b.state == pb.BRANCH_STATE_RUNNING for b in listed), listed
    ids = {b.id for b in listed} | {b.database_id for b in listed}
    generations: dict[str, int] = {}
    for name in d.pool.datasets():
        if "/db/" not in name:
            continue
        leaf = name.split("@")[0].rsplit("/", 1)[-1]
        owner = leaf.split("-")[0]  # a reset gives a branch dataset a generation suffix
        assert owner in ids, f"leaked dataset {name}"
        if "@" not in name:
            generations[owner] = generations.get(owner, 0) + 1
    doubled = {k: v for k, v in generations.items() if v > 1}
    assert not doubled, f"a branch with two datasets: {doubled}"
    assert len(postmaster_pids(d.mount_root)) == len(listed)
    assert len({b.port for b in listed}) == len(listed)
    with d.stub() as s:
        for b in listed:
            conn = s.GetConnection(pb.GetConnectionRequest(branch=pb.BranchRef(branch_id=b.id)))
            assert query(conn, "select 1") == [(1,)]


def test_kill9_keeps_databases_running_and_adopts_them(crashy: Daemon) -> None:
    with crashy.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="survivor"), timeout=120)
        child = s.CreateBranch(pb.CreateBranchRequest(database="survivor", name="c"),
                               timeout=60)
    before = postmaster_pids(crashy.mount_root)
    crashy.kill9()
    # The daemon is gone; its databases are not.
    assert query(db.connection, "select 1") == [(1,)]
    assert query(child.connection, "select 1") == [(1,)]
    crashy.start()
    assert postmaster_pids(crashy.mount_root) == before  # adopted, not restarted
    assert_consistent(crashy)


@pytest.mark.parametrize("delay", [0.02, 0.1, 0.2, 0.3, 0.45])
def test_kill9_during_branch_creation_leaves_nothing_half_made(crashy: Daemon,
                                                              delay: float) -> None:
    name = f"victim-{secrets.token_hex(2)}"
    with crashy.stub() as s:
        s.CreateDatabase(pb.CreateDatabaseRequest(name=name), timeout=120)

    def create() -> None:
        # The call may also finish before the kill: both outcomes must be consistent.
        with crashy.stub() as s, contextlib.suppress(grpc.RpcError):
            s.CreateBranch(pb.CreateBranchRequest(database=name, name="half"), timeout=30)

    caller = threading.Thread(target=create)
    caller.start()
    time.sleep(delay)
    crashy.kill9()
    caller.join()
    crashy.start()
    assert_consistent(crashy)


def test_kill9_during_reset_finishes_or_undoes_it(crashy: Daemon) -> None:
    with crashy.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="resetme"), timeout=120)
        query(db.connection, "create table t(v int); insert into t values (1)")
        child = s.CreateBranch(pb.CreateBranchRequest(database="resetme", name="r"), timeout=60)
    for delay in (0.05, 0.15, 0.3):
        query(db.connection, "insert into t values (2)")

        def reset() -> None:
            with crashy.stub() as s, contextlib.suppress(grpc.RpcError):
                s.ResetBranch(pb.ResetBranchRequest(
                    branch=pb.BranchRef(branch_id=child.branch.id)), timeout=30)

        caller = threading.Thread(target=reset)
        caller.start()
        time.sleep(delay)
        crashy.kill9()
        caller.join()
        crashy.start()
        assert_consistent(crashy)
        # The branch is still there under its id, port and password.
        assert query(child.connection, "select count(*) > 0 from t") == [(True,)]


def test_dead_postmaster_is_restarted(crashy: Daemon) -> None:
    with crashy.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="phoenix"), timeout=120)
    root = crashy.mount_root / crashy.pool.name / "db" / db.database.id
    (old,) = postmaster_pids(root)
    os.kill(old, signal.SIGKILL)
    ref = pb.BranchRef(branch_id=db.main_branch.id)
    deadline = time.monotonic() + 30
    with crashy.stub() as s:
        while time.monotonic() < deadline:
            pids = postmaster_pids(root)
            state = s.GetBranch(pb.GetBranchRequest(branch=ref)).state
            if pids and old not in pids and state == pb.BRANCH_STATE_RUNNING:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the postmaster was not restarted")
    assert query(db.connection, "select 1") == [(1,)]
