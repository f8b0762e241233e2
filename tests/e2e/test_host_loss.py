"""The host-loss drill on about 100 MB (benchmarks/bench_host_loss.py has the rig).

Host A (its own network namespace, pool and state) runs a database under
pgbench and a ledger client, archiving to SeaweedFS. A is destroyed: SIGKILL
for cygnetd and its postmasters, its pool destroyed, its state directory and
namespace deleted. Host B restores the database from the bucket alone. B's
ledger rows must be a prefix of what the client sent (nothing invented after
the restore point), reach past the backup (archived WAL from the bucket was
replayed), and pg_amcheck must find nothing. A second restore from the bucket
to the moment a mid-load commit was acknowledged holds exactly the ledger up
to it. RPO and RTO are printed, not asserted (the machine is shared and noisy).
"""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from benchmarks.bench_host_loss import Ledger, drill
from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, query

pytestmark = pytest.mark.integration


def on_b(b: Daemon, ledger: Ledger) -> None:
    """A restore to a point in time from the bucket; then refusals: a host with
    nothing in the bucket, a name the lost host never archived, a malformed host."""
    # The acknowledgement of commit k arrived at t_k and commit k+1 was sent after
    # it: recovering to t_k keeps exactly 1..k.
    k, t_k = ledger.acks[len(ledger.acks) // 2]
    at = Timestamp()
    at.FromNanoseconds(int(t_k * 1e9))
    with b.stub() as s:
        then = s.RestoreDatabase(pb.RestoreDatabaseRequest(
            name="drill", new_name="drill-then", from_host="host-a", at_time=at), timeout=600)
    assert query(then.connection, "select count(*)::int, max(seq)::int from ledger") == [(k, k)]
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
    # check() asserts safety; on_b() runs on B after the restore.
    result = drill(scale=6, seconds=8.0, rate=100, size="3G", also_on_b=on_b)
    print("host-loss drill:", json.dumps(result))
    assert result["pg_amcheck"] == "clean"
    # The backup was taken before the ledger's first insert: every ledger row on B
    # came from WAL that A archived to the bucket.
    assert result["restored_commits"] > 0
    assert result["restored_commits"] + result["rpo_commits_lost"] == result[
        "acknowledged_commits"] or result["rpo_commits_lost"] == 0
