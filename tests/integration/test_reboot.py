"""A host reboot drill: every branch that should run comes back with its data,
stopped branches stay stopped, and a branch without its data says why. And a
killed postmaster comes back at the first try.

The drill kills cygnetd and every postmaster with SIGKILL, then makes the pool
come back the way zfs-fuse brings it back after a restart: imported, nothing
mounted (`zpool export`, then `zpool import -N`). zfs-fuse itself is not
restarted: other tests share it (benchmarks/ has no such drill yet).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, postmaster_pids, query, run
from tests.integration.own_daemon import own_daemon

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def host() -> Iterator[Daemon]:
    with own_daemon("r", 55900, "1G") as d:
        yield d


def crash(d: Daemon) -> None:
    """Power cut: the daemon and every postmaster die at once."""
    d.kill9()
    for pid in postmaster_pids(d.mount_root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while postmaster_pids(d.mount_root) and time.monotonic() < deadline:
        time.sleep(0.05)


def mounted(d: Daemon) -> list[str]:
    out = run("zfs", "get", "-H", "-r", "-o", "name,value", "mounted", d.pool.name).stdout
    return [line.split("\t")[0] for line in out.splitlines() if line.endswith("\tyes")]


def reimport_unmounted(d: Daemon) -> None:
    """The pool back as after a reboot: imported, nothing mounted. zfs-fuse's
    import has no -N, so it mounts and the datasets are unmounted after, deepest
    first. The image is the only device in the directory searched, so no other
    pool is touched."""
    devices = d.base / "devices"
    devices.mkdir(exist_ok=True)
    link = devices / d.pool.image.name
    if not link.exists():
        link.symlink_to(d.pool.image)
    run("zpool", "export", d.pool.name)
    run("zpool", "import", "-o", "cachefile=none", "-d", str(devices), d.pool.name)
    for name in sorted(mounted(d), key=lambda n: -n.count("/")):
        run("zfs", "umount", name)
    assert mounted(d) == []


def branches(d: Daemon) -> dict[str, pb.Branch]:
    with d.stub() as s:
        return {b.name: b for b in s.ListBranches(pb.ListBranchesRequest()).branches}


def connection(d: Daemon, branch: pb.Branch) -> pb.Connection:
    with d.stub() as s:
        conn: pb.Connection = s.GetConnection(
            pb.GetConnectionRequest(branch=pb.BranchRef(branch_id=branch.id)))
    return conn


def answers(d: Daemon, branch: pb.Branch, sql: str) -> list[tuple[object, ...]] | None:
    try:
        return query(connection(d, branch), sql)
    except Exception:
        return None


def wait_answer(d: Daemon, branch: pb.Branch, sql: str, timeout: float = 30.0
                ) -> list[tuple[object, ...]]:
    deadline = time.monotonic() + timeout
    while (rows := answers(d, branch, sql)) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"{branch.name} did not answer within {timeout:.0f}s:\n{d.tail()}")
        time.sleep(0.1)
    return rows


def test_reboot_brings_back_what_should_run(host: Daemon) -> None:
    with host.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="shop", size_class="nano"),
                              timeout=120)
        query(db.connection, "create table t (v text); insert into t values ('main')")
        made = {}
        for name in ("dev", "old"):
            made[name] = s.CreateBranch(pb.CreateBranchRequest(database="shop", name=name),
                                        timeout=120).branch
            query(connection(host, made[name]), f"insert into t values ('{name}')")
        s.StopBranch(pb.StopBranchRequest(branch=pb.BranchRef(branch_id=made["old"].id)),
                     timeout=60)

    crash(host)
    reimport_unmounted(host)
    started = time.monotonic()
    host.start()
    listed = branches(host)
    for name in ("main", "dev"):
        rows = wait_answer(host, listed[name], "select v from t order by v")
        assert (name,) in rows, rows
    print(f"\nall running branches answered {time.monotonic() - started:.2f}s after start")
    listed = branches(host)
    assert {n: b.state for n, b in listed.items()} == {
        "main": pb.BRANCH_STATE_RUNNING, "dev": pb.BRANCH_STATE_RUNNING,
        "old": pb.BRANCH_STATE_STOPPED}
    assert len(postmaster_pids(host.mount_root)) == 2
    # The stopped branch's data is mounted and intact: it starts when asked.
    with host.stub() as s:
        s.StartBranch(pb.StartBranchRequest(branch=pb.BranchRef(branch_id=made["old"].id)),
                      timeout=60)
    assert ("old",) in wait_answer(host, listed["old"], "select v from t")


def test_branch_without_its_data_says_so_and_comes_back(host: Daemon) -> None:
    dev = branches(host)["dev"]
    mount = host.mount_root / host.pool.name / "db" / dev.database_id / dev.id
    crash(host)
    run("zfs", "umount", f"{host.pool.name}/cygnet/db/{dev.database_id}/{dev.id}")
    # Something left in the empty mountpoint directory: ZFS will not mount over it.
    blocker = mount / "left-behind"
    blocker.write_text("")
    try:
        host.start()
        state = branches(host)["dev"]
        assert state.state == pb.BRANCH_STATE_UNAVAILABLE, state
        assert "not mounted" in state.state_message, state.state_message
        with host.stub() as s, pytest.raises(grpc.RpcError) as refused:
            s.StartBranch(pb.StartBranchRequest(branch=pb.BranchRef(branch_id=dev.id)))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not mounted" in (refused.value.details() or "")
        assert wait_answer(host, branches(host)["main"], "select 1") == [(1,)]
    finally:
        blocker.unlink()
    # The supervisor mounts it once it can, and starts the branch.
    assert ("dev",) in wait_answer(host, dev, "select v from t")
    assert branches(host)["dev"].state == pb.BRANCH_STATE_RUNNING
    assert Path(mount / "pgdata" / "PG_VERSION").is_file()


def test_killed_postmaster_is_back_at_the_first_try(host: Daemon) -> None:
    """Its lock files (postmaster.pid, .s.PGSQL.PORT.lock) name a dead pid, or a
    zombie until PID 1 reaps it; Postgres alone would refuse to start on them."""
    main = branches(host)["main"]
    root = host.mount_root / host.pool.name / "db" / main.database_id / main.id
    (old,) = postmaster_pids(root)
    logged = len(host.log_path.read_text())
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (pids := postmaster_pids(root)) or old in pids:
        if time.monotonic() > deadline:
            pytest.fail(f"the postmaster was not restarted:\n{host.tail()}")
        time.sleep(0.05)
    assert wait_answer(host, main, "select 1") == [(1,)]
    since = host.log_path.read_text()[logged:]
    assert f"postmaster of {main.id} back in" in since, since
    assert f"start of {main.id} failed" not in since, since
