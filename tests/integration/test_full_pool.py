"""A full pool can still be emptied through the API (docs/operations.md, "Full pools").

One daemon on a small pool of its own: a branch's inserts fill the pool, then
snapshots and branches are refused with RESOURCE_EXHAUSTED before Postgres is
touched (so it stays up), stopping works, and `cygnet branch rm` of the branch
that filled it works and gives the space back; the reserve comes back too.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import backup_pb2 as bpb
from cygnet.api.v1 import backup_pb2_grpc as bpb_grpc
from tests.harness import Daemon, postmaster_pids
from tests.integration.own_daemon import own_daemon
from tests.integration.test_cli_support import cygnet

pytestmark = pytest.mark.integration

MIB = 2**20
SETTINGS = f"min_free_bytes = {48 * MIB}\nreserve_bytes = {32 * MIB}\n"


@pytest.fixture(scope="module")
def small() -> Iterator[Daemon]:
    with own_daemon("f", 55700, "320M", SETTINGS) as d:
        yield d


def pool(d: Daemon) -> pb.Pool:
    with d.stub() as s:
        status: pb.HostStatus = s.GetHostStatus(pb.GetHostStatusRequest())
    (p,) = status.pools
    return p


def fill(uri: str, *, panics_allowed: bool = False) -> None:
    """Inserts until the pool is full. An unlogged table: the data files take the
    ENOSPC (an ERROR), not the WAL (a PANIC), as with a user's bulk load."""
    with psycopg.connect(uri, autocommit=True) as c:
        # Uncompressed 1.9 kB values: cheap to make, and they take what they say.
        c.execute("create unlogged table fill (v text)")
        c.execute("alter table fill alter column v set storage external")
        for _ in range(200):
            try:
                c.execute("insert into fill select repeat(md5(i::text), 60)"
                          " from generate_series(1, 10000) i")
            except psycopg.errors.DiskFull:  # ENOSPC: the pool is full
                return
            except psycopg.errors.InternalError_ as exc:  # EDQUOT has no SQLSTATE of its own
                assert "quota exceeded" in str(exc), exc
                return
            except psycopg.OperationalError:
                # Even so, a new WAL segment can be what meets the limit, and
                # Postgres PANICs when it cannot install one, then recovers.
                if not panics_allowed:
                    raise
                wait_for("crash recovery", lambda: answers(uri))
                return
        pytest.fail("the pool never filled")


def answers(uri: str) -> bool:
    try:
        with psycopg.connect(uri, connect_timeout=5) as c:
            c.execute("select 1")
    except psycopg.OperationalError:
        return False
    return True


def fill_to_the_byte(mount: Path, keep_under: int) -> None:
    """Tops the dataset at `mount` up until it has less than `keep_under` bytes left.
    ZFS refuses writes early while its accounting of pending writes catches up, and
    Postgres frees WAL segments at checkpoints, so one top-up is not always enough."""
    for round_ in range(10):
        st = os.statvfs(mount)
        if st.f_bavail * st.f_frsize < keep_under:
            return
        top_up(mount / f"top-up-{round_}", must_fill=False)
        time.sleep(0.5)
    pytest.fail(f"{mount} kept more than {keep_under // MIB} MiB free")


def top_up(path: Path, *, must_fill: bool = True) -> None:
    try:
        with open(path, "wb") as f:
            for _ in range(4096):
                f.write(os.urandom(64 * 1024))
                f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        assert exc.errno in (errno.ENOSPC, errno.EDQUOT), exc
        return
    if must_fill:
        pytest.fail("the pool had more room than expected")


def wait_for(what: str, check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.2)


def refused_snapshot(s: Any, uri: str, main: Path, ref: pb.BranchRef) -> grpc.RpcError:
    """The error of a snapshot of a database filled to its quota. A full disk can make
    Postgres PANIC, and the crash recovery that follows (the answer is then ABORTED,
    "not yet accepting connections") ends with a checkpoint that frees WAL segments:
    the quota then has room again, the snapshot is rightly taken, and is dropped."""
    for _ in range(20):
        wait_for("crash recovery", lambda: answers(uri), 60)
        fill_to_the_byte(main, 48 * MIB)
        try:
            s.CreateSnapshot(pb.CreateSnapshotRequest(branch=ref, name="s1"), timeout=60)
        except grpc.RpcError as exc:
            if "not yet accepting connections" not in (exc.details() or ""):
                return exc
            continue
        s.DeleteSnapshot(pb.DeleteSnapshotRequest(branch=ref, snapshot="s1"), timeout=60)
    pytest.fail("a snapshot of the full database was never refused")


def test_full_pool_refuses_snapshots_and_still_stops_and_deletes(small: Daemon) -> None:
    assert pool(small).reserve_bytes == 32 * MIB
    with small.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="full", size_class="nano"),
                              timeout=120)
        filler = s.CreateBranch(pb.CreateBranchRequest(database="full", name="filler"),
                                timeout=120)
        free_before = pool(small).free_bytes
        fill(filler.connection.uri)
        assert pool(small).free_bytes < 48 * MIB
        ref = pb.BranchRef(branch_id=filler.branch.id)
        root = small.mount_root / small.pool.name / "db" / db.database.id
        # Postgres stops at the last free megabyte or so; take that too, so
        # that even `zfs set` is refused.
        top_up(root / filler.branch.id / "top-up")
        pids = postmaster_pids(root)

        with pytest.raises(grpc.RpcError) as refused:
            s.CreateSnapshot(pb.CreateSnapshotRequest(branch=ref, name="s1"), timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "free space" in (refused.value.details() or "")
        with pytest.raises(grpc.RpcError) as refused:
            s.CreateBranch(pb.CreateBranchRequest(database="full", name="more"), timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with small.channel() as ch, pytest.raises(grpc.RpcError) as refused:
            list(bpb_grpc.BackupsStub(ch).CreateBackup(  # type: ignore[no-untyped-call]
                bpb.CreateBackupRequest(branch=ref), timeout=60))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # No CHECKPOINT was issued, so no PANIC: the same postmasters serve.
        assert postmaster_pids(root) == pids
        assert psycopg.connect(filler.connection.uri).execute("select 1").fetchone() == (1,)

        # Stopping writes the desired state first: the reserve makes room for it.
        stopped = s.StopBranch(pb.StopBranchRequest(
            branch=pb.BranchRef(branch_id=db.main_branch.id)), timeout=120)
        assert stopped.state == pb.BRANCH_STATE_STOPPED
        # The reserve is released only if the write did not fit in what zfs-fuse
        # still had (some runs it does: 100 KiB is enough for a property).
        assert pool(small).reserve_bytes <= 32 * MIB

    cygnet(small, "branch", "rm", "full/filler")
    wait_for("the space coming back", lambda: pool(small).free_bytes > free_before - 16 * MIB)
    wait_for("the reserve coming back", lambda: pool(small).reserve_bytes == 32 * MIB)
    with small.stub() as s:
        started = s.StartBranch(pb.StartBranchRequest(
            branch=pb.BranchRef(branch_id=db.main_branch.id)), timeout=120)
        assert started.state == pb.BRANCH_STATE_RUNNING
        s.CreateSnapshot(pb.CreateSnapshotRequest(
            branch=pb.BranchRef(branch_id=db.main_branch.id), name="after"), timeout=60)


def test_quota_keeps_a_database_from_filling_the_pool(small: Daemon) -> None:
    with small.stub() as s:
        with pytest.raises(grpc.RpcError) as bad:
            s.CreateDatabase(pb.CreateDatabaseRequest(name="tiny", quota_bytes=MIB))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "quota_bytes" in (bad.value.details() or "")
    created = cygnet(small, "db", "create", "capped", "--size", "nano", "--quota", "112M",
                     "--json").json()
    with small.stub() as s:
        shown = s.GetDatabase(pb.GetDatabaseRequest(database="capped"))
    assert shown.quota_bytes == 112 * MIB
    free_before = pool(small).free_bytes
    fill(created["connection"]["uri"], panics_allowed=True)
    # The database is full; the pool is not.
    assert pool(small).free_bytes > free_before - 150 * MIB
    main = small.mount_root / small.pool.name / "db" / created["database"]["id"] \
        / created["main_branch"]["id"]
    with small.stub() as s:
        ref = pb.BranchRef(database="capped", name="main")
        refused = refused_snapshot(s, created["connection"]["uri"], main, ref)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.details()
    cygnet(small, "db", "rm", "capped", "--yes")
