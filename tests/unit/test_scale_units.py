"""Scale to zero without a daemon: what counts as a client, WAL still to archive,
idle timeouts, and the reason a failed wake gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from cygnet.agent.idle import connection_kind, timeout_of, wal_to_archive
from cygnet.agent.inventory import BranchRecord
from cygnet.agent.scale import _server_says


@pytest.mark.parametrize(("title", "kind"), [
    ("postgres: postgres postgres 127.0.0.1(33000) SELECT", "client"),
    ("postgres: app shop 10.0.0.7(51514) idle", "client"),
    ("postgres: postgres postgres [local] idle in transaction", "client"),
    ("postgres: app shop ::1(40000) idle", "client"),
    ("postgres: pr42: app shop 127.0.0.1(33000) idle", "client"),  # cluster_name set
    ("postgres: walsender replicator 10.0.0.8(40100) streaming 0/3000060", "walsender"),
    ("postgres: walsender postgres 127.0.0.1(5555) idle", "walsender"),
    ("postgres: checkpointer", None),
    ("postgres: background writer", None),
    ("postgres: walwriter", None),
    ("postgres: autovacuum launcher", None),
    ("postgres: autovacuum worker shop", None),
    ("postgres: logical replication launcher", None),
    ("postgres: io worker 0", None),
    ("postgres: archiver last was 000000010000000000000003", None),
    ("postgres: pr42: checkpointer", None),
    ("/usr/lib/postgresql/15/bin/postgres -D /data/pgdata", None),  # the postmaster
])
def test_connections_are_told_from_postgres_own_processes(title: str, kind: str | None
                                                          ) -> None:
    assert connection_kind(title) == kind


def test_wal_to_archive_counts_ready_segments(tmp_path: Path) -> None:
    assert wal_to_archive(tmp_path) == 0  # no pg_wal at all: nothing
    status = tmp_path / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    (status / "000000010000000000000001.done").touch()
    (status / "000000010000000000000002.ready").touch()
    (status / "000000010000000000000003.ready").touch()
    assert wal_to_archive(tmp_path) == 2


def _branch(suspend_after: int) -> BranchRecord:
    return BranchRecord("brxxxxxxxxxx", "b", "dbxxxxxxxxxx", "", "p/cygnet/db/x/y", None, 0,
                        "running", "ready", 0.0, "", 0, 0, suspend_after=suspend_after)


def test_a_branch_timeout_overrides_the_host() -> None:
    assert timeout_of(_branch(-1), 300.0) == 300.0
    assert timeout_of(_branch(0), 300.0) == 0.0  # never
    assert timeout_of(_branch(60), 300.0) == 60.0
    assert timeout_of(_branch(-1), 0.0) == 0.0


def test_a_failed_start_says_why_in_the_server_own_words() -> None:
    message = ("postmaster exited during startup; last log lines:\n"
               "2026-11-26 00:09:30.700 UTC [19587] LOG:  starting PostgreSQL 15.18\n"
               "2026-11-26 00:09:30.732 UTC [19587] FATAL:  could not map anonymous "
               "shared memory: Cannot allocate memory\n"
               "2026-11-26 00:09:30.732 UTC [19587] HINT:  This usually means huge pages\n"
               "2026-11-26 00:09:30.733 UTC [19587] LOG:  database system is shut down")
    assert _server_says(message) == (
        "postmaster exited during startup: FATAL: could not map anonymous shared memory: "
        "Cannot allocate memory HINT: This usually means huge pages")
    assert _server_says("postmaster 12 not ready after 60s") == \
        "postmaster 12 not ready after 60s"
