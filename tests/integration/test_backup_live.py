"""A running branch backed up from its live files while clients write: the
restored copy is transactionally consistent and its indexes check out."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from tests.conftest import unique
from tests.harness import Daemon, query
from tests.integration.backup_helpers import create_backup, restore

pytestmark = pytest.mark.integration

ACCOUNTS = 2000
TOTAL = ACCOUNTS * 100


def writer(uri: str, stop: threading.Event, done: list[int]) -> None:
    """Transfers between accounts (the total never changes) and a growing log."""
    with psycopg.connect(uri, autocommit=False, connect_timeout=10) as conn:
        k = 0
        while not stop.is_set():
            a, b = k % ACCOUNTS + 1, (k * 7919) % ACCOUNTS + 1
            conn.execute("update acct set bal = bal - 1 where id = %s", (a,))
            conn.execute("update acct set bal = bal + 1 where id = %s", (b,))
            conn.execute("insert into log select %s, repeat('x', 200) from generate_series(1, 20)",
                         (k,))
            conn.commit()
            k += 1
        done.append(k)


def test_backup_of_a_branch_under_writes_restores_consistent(daemon: Daemon) -> None:
    name = unique("live")
    with daemon.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                              timeout=120)
    query(db.connection, f"create table acct (id int primary key, bal int not null);"
                         f"insert into acct select g, 100 from generate_series(1, {ACCOUNTS}) g;"
                         "create table log (k int, pad text); create index on log (k)")
    stop, done = threading.Event(), list[int]()
    thread = threading.Thread(target=writer, args=(db.connection.uri, stop, done))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while query(db.connection, "select count(*) from log")[0][0] == 0:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
        made = create_backup(daemon, pb.BranchRef(database=name))
    finally:
        stop.set()
        thread.join(60)
    assert done and done[0] > 0
    back = restore(daemon, made.id, branch_name="back")
    conn = back.connection
    assert query(conn, "select sum(bal)::int, count(*)::int from acct") == [(TOTAL, ACCOUNTS)]
    rows, transactions = (int(str(v)) for v in
                          query(conn, "select count(*), count(distinct k) from log")[0])
    assert rows == 20 * transactions and 0 < transactions <= done[0]  # whole transactions
    query(conn, "create extension if not exists amcheck")
    for index in ("acct_pkey", "log_k_idx"):
        query(conn, f"select bt_index_check('{index}', true)")
