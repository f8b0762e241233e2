"""Continuous WAL archiving with the real parts: Postgres' archive_command (the C
program cygnet-wal), the spool, cygnetd's ingestion and the repository."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from cygnet.agent.archive import PROGRAM
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import Daemon, query

pytestmark = pytest.mark.integration

Stub = pb_grpc.AgentStub


def archived(daemon: Daemon, branch_id: str, gen: int = 1) -> dict[str, bytes]:
    d = daemon.base / "state" / "backups" / "wal" / branch_id / f"g{gen}"
    return {p.name: p.read_bytes() for p in d.glob("*.zst")} if d.is_dir() else {}


def switch(conn: pb.Connection) -> str:
    """A commit, then a segment switch; the name of the segment that was closed."""
    query(conn, "create table if not exists t(v int); insert into t values (1)")
    return str(query(conn, "select pg_walfile_name(pg_switch_wal())")[0][0])


def wait_for(daemon: Daemon, branch_id: str, name: str, gen: int = 1) -> None:
    deadline = time.monotonic() + 30
    while f"{name}.zst" not in archived(daemon, branch_id, gen):
        assert time.monotonic() < deadline, f"{name} of {branch_id} never reached the repository"
        time.sleep(0.1)


def test_main_archives_and_a_child_archives_only_into_its_own(daemon: Daemon, stub: Stub) -> None:
    db = stub.CreateDatabase(pb.CreateDatabaseRequest(name=unique("wal"), size_class="nano"),
                             timeout=120)
    main_id = db.main_branch.id
    wait_for(daemon, main_id, switch(db.connection))
    meta = json.loads((daemon.base / "state" / "backups" / "wal" / main_id / "g1" /
                       "generation.json").read_text())
    assert meta["start_lsn"] == 0 and meta["base_branch"] == ""

    child = stub.CreateBranch(pb.CreateBranchRequest(database=db.database.name, name="c"),
                              timeout=60)
    assert archived(daemon, child.branch.id) == {}  # off by default for branches
    dataset = f"{daemon.pool.name}/cygnet/db/{db.database.id}/{child.branch.id}"
    subprocess.run(["zfs", "set", "cygnet:archive=on", dataset], check=True)
    ref = pb.BranchRef(branch_id=child.branch.id)
    stub.StopBranch(pb.StopBranchRequest(branch=ref), timeout=60)
    stub.StartBranch(pb.StartBranchRequest(branch=ref), timeout=60)
    name = switch(child.connection)
    wait_for(daemon, child.branch.id, name)
    # Same timeline, same segment names: the child's copy is only in its own archive
    # (main's, if main archived that name too, is main's own WAL).
    ours = archived(daemon, child.branch.id)[f"{name}.zst"]
    assert ours not in archived(daemon, main_id).values()
    meta = json.loads((daemon.base / "state" / "backups" / "wal" / child.branch.id / "g1" /
                       "generation.json").read_text())
    assert meta["base_branch"] == main_id and meta["start_lsn"] > 0


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROGRAM), *args], capture_output=True, text=True, timeout=30)


def test_archive_program_bounds_the_spool_and_never_overwrites(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    seg = tmp_path / "000000010000000000000001"
    seg.write_bytes(os.urandom(600_000))
    assert run("archive", str(spool), "1000000", str(seg), seg.name).returncode == 0
    assert (spool / seg.name).read_bytes() == seg.read_bytes()
    assert run("archive", str(spool), "1000000", str(seg), seg.name).returncode == 0  # a retry
    other = tmp_path / "000000010000000000000002"
    other.write_bytes(os.urandom(600_000))
    full = run("archive", str(spool), "1000000", str(other), other.name)
    assert full.returncode == 1 and "keeping" in full.stderr  # past the bound: Postgres keeps it
    assert not (spool / other.name).exists()
    assert run("archive", str(spool), "9000000", str(other), seg.name).returncode == 1
    assert run("archive", str(spool), "9000000", str(seg), "../escape").returncode == 1


def test_restore_program_serves_only_the_plan(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "000000010000000000000003").write_bytes(b"x" * 100)
    dest = tmp_path / "RECOVERYXLOG"
    assert run("restore", str(stage), "000000010000000000000003", str(dest)).returncode == 0
    assert dest.read_bytes() == b"x" * 100
    # Not staged and not pending: "not found" at once, whatever the archive holds.
    assert run("restore", str(stage), "000000010000000000000004", str(dest)).returncode == 1
    # Pending: waited for until it is staged.
    (stage / "000000010000000000000005.pending").touch()
    proc = subprocess.Popen([str(PROGRAM), "restore", str(stage), "000000010000000000000005",
                             str(dest)])
    time.sleep(0.2)
    assert proc.poll() is None
    (stage / "000000010000000000000005").write_bytes(b"y")
    assert proc.wait(10) == 0 and dest.read_bytes() == b"y"
