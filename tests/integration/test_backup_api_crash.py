"""kill -9 of cygnetd during a backup: the repository verifies and no temporary
dataset survives the restart. A daemon of its own (ports 59700-59899)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import backup_pb2 as bpb
from tests.harness import Daemon, private_daemon, query
from tests.integration.backup_helpers import (
    backups,
    checksums,
    create_backup,
    fill,
    restore,
    temp_datasets,
    verify,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crashy() -> Iterator[Daemon]:
    with private_daemon("bc", 59700, "4G") as d:
        yield d


@pytest.mark.parametrize("phase", ["snapshot", "read"])
def test_kill9_during_backup(crashy: Daemon, phase: str) -> None:
    name = f"crash-{phase}"
    with crashy.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                              timeout=120)
    fill(db.connection, "t", 250_000)
    sums = checksums(db.connection, ["t"])
    create_backup(crashy, pb.BranchRef(database=name))  # an earlier backup must survive
    reached = threading.Event()

    def run() -> None:
        req = bpb.CreateBackupRequest(branch=pb.BranchRef(database=name))
        try:
            for event in backups(crashy).CreateBackup(req, timeout=120):
                if event.HasField("progress") and event.progress.phase == phase:
                    reached.set()
        except grpc.RpcError:
            pass
        reached.set()

    caller = threading.Thread(target=run)
    caller.start()
    assert reached.wait(60)
    crashy.kill9()
    caller.join()
    crashy.start()
    assert not temp_datasets(crashy)
    report = verify(crashy)
    assert report.ok, report.issues
    listed = backups(crashy).ListBackups(bpb.ListBackupsRequest(database=name)).backups
    assert listed
    with crashy.stub() as s:
        branches = s.ListBranches(pb.ListBranchesRequest(database=name)).branches
    assert [b.state for b in branches] == [pb.BRANCH_STATE_RUNNING]
    assert query(db.connection, "select count(*) from t") == [(250_000,)]
    done = restore(crashy, listed[0].id, branch_name="back")
    assert checksums(done.connection, ["t"]) == sums
