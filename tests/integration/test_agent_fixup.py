"""A branch never shares replication slots, subscriptions or a WAL archive with its parent."""

from __future__ import annotations

import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import query

pytestmark = pytest.mark.integration

Stub = pb_grpc.AgentStub


def test_branch_drops_slots_subscriptions_and_archive(stub: Stub) -> None:
    name = unique()
    db = stub.CreateDatabase(pb.CreateDatabaseRequest(name=name), timeout=120)
    parent = db.connection
    query(parent, "select pg_create_physical_replication_slot('standby_slot')")
    query(parent, "alter system set archive_command = 'cp %p /srv/archive/%f'")
    query(parent, "select pg_reload_conf()")
    # A subscription whose publisher is unreachable: enabled, with a slot name.
    query(parent, "create subscription upstream connection 'host=127.0.0.1 port=1 dbname=x' "
                  "publication p with (connect = false)")
    query(parent, "alter subscription upstream set (slot_name = 'upstream')")
    query(parent, "alter subscription upstream enable")
    query(parent, "create table t(v int); insert into t values (7)")

    child = stub.CreateBranch(pb.CreateBranchRequest(database=name, name="clean"), timeout=60)
    conn = child.connection
    assert query(conn, "select v from t") == [(7,)]
    assert query(conn, "select count(*) from pg_replication_slots") == [(0,)]
    assert query(conn, "select subenabled, subslotname from pg_subscription") == [(False, None)]
    assert query(conn, "show archive_command") in ([("",)], [("(disabled)",)])
    assert query(conn, "show archive_mode") == [("off",)]
    # Logical replication workers are back on after the fix-up restart.
    assert query(conn, "show max_logical_replication_workers") != [("0",)]
    # The parent keeps what is its own.
    assert query(parent, "select slot_name from pg_replication_slots") == [("standby_slot",)]
    assert query(parent, "select subenabled from pg_subscription") == [(True,)]
