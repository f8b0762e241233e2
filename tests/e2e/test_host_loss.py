"""The host-loss drill on about 100 MB (benchmarks/bench_host_loss.py has the rig).

Host A (its own network namespace, pool and state) runs a database under
pgbench and a ledger client, archiving to SeaweedFS. A is destroyed: SIGKILL
for cygnetd and its postmasters, its pool destroyed, its state directory and
namespace deleted. Host B restores the database from the bucket alone. B's
ledger rows must be a prefix of what the client sent (nothing invented after
the restore point), reach past the backup (archived WAL from the bucket was
replayed), and pg_amcheck must find nothing. RPO and RTO are printed, not
asserted (the machine is shared and noisy).
"""

from __future__ import annotations

import json

import grpc
import pytest

from benchmarks.bench_host_loss import drill
from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon

pytestmark = pytest.mark.integration


def refusals(b: Daemon) -> None:
    """A host with nothing in the bucket, and a name the lost host never archived."""
    with b.stub() as s:
        for req, code, words in [
                (pb.RestoreDatabaseRequest(name="drill", from_host="host-z"),
                 grpc.StatusCode.NOT_FOUND, "from_host"),
                (pb.RestoreDatabaseRequest(name="nosuch", from_host="host-a"),
                 grpc.StatusCode.NOT_FOUND, "nosuch"),
                (pb.RestoreDatabaseRequest(name="drill", from_host="bad/host"),
                 grpc.StatusCode.INVALID_ARGUMENT, "from_host")]:
            with pytest.raises(grpc.RpcError) as err:
                s.RestoreDatabase(req, timeout=120)
            assert err.value.code() == code, err.value.details()
            assert words in (err.value.details() or ""), err.value.details()


def test_host_lost_under_load_restored_elsewhere_from_the_bucket() -> None:
    # check() asserts safety; refusals() runs on B after the restore.
    result = drill(scale=6, seconds=8.0, rate=100, size="3G", also_on_b=refusals)
    print("host-loss drill:", json.dumps(result))
    assert result["pg_amcheck"] == "clean"
    # The backup was taken before the ledger's first insert: every ledger row on B
    # came from WAL that A archived to the bucket.
    assert result["restored_commits"] > 0
    assert result["restored_commits"] + result["rpo_commits_lost"] == result[
        "acknowledged_commits"] or result["rpo_commits_lost"] == 0
