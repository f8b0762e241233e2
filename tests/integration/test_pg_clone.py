"""Clone fixup on a copy of a RUNNING cluster (cp -a stands in for zfs snapshot + clone)."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess

import psycopg
import pytest

from cygnet.postgres import process, sql
from cygnet.postgres.config import write_settings
from cygnet.postgres.fixup import disable_subscriptions, prepare_clone
from cygnet.postgres.pidfile import PIDFILE
from tests.integration import pg_helpers
from tests.integration.pg_helpers import Cluster, PgEnv

pytestmark = pytest.mark.integration

# Fixtures shared through pg_helpers (no conftest.py in this layer's files).
pg_template = pg_helpers.pg_template
pg_env = pg_helpers.pg_env

SETUP = [
    "CREATE TABLE t (id int PRIMARY KEY, v text)",
    "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g",
    "SELECT pg_create_physical_replication_slot('inherited_slot', true)",
    "ALTER SYSTEM SET archive_command = '/bin/false %p'",
    "ALTER SYSTEM SET restore_command = '/bin/false'",
    "ALTER SYSTEM SET primary_conninfo = 'host=10.0.0.1'",
    "ALTER SYSTEM SET work_mem = '3MB'",  # unrelated ALTER SYSTEM settings are kept
    'CREATE DATABASE "odd ""db"""',
]
# connect = false: no publisher needed; the subscription is a catalog row with a slot name.
SUBSCRIBE = (
    "CREATE SUBSCRIPTION {} CONNECTION 'host=127.0.0.1 port=1 dbname=x'"
    " PUBLICATION p WITH (connect = false)"
)


def q(c: Cluster, query: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
    return asyncio.run(sql.query_all(c.socket_dir, c.port, query, dbname=dbname))


def make_parent(pg_env: PgEnv) -> Cluster:
    parent = pg_env.new_cluster("parent")
    parent.start()
    for stmt in SETUP:
        q(parent, stmt)
    q(parent, "SELECT pg_reload_conf()")
    q(parent, SUBSCRIBE.format('"Sub One"'))
    q(parent, SUBSCRIBE.format("sub2"), dbname='odd "db"')
    asyncio.run(sql.checkpoint_for_snapshot(parent.socket_dir, parent.port))
    return parent


def test_clone_of_running_cluster(pg_env: PgEnv) -> None:
    parent = make_parent(pg_env)
    clone = pg_env.adopt_dir("clone", pg_env.settings("clone", logical_workers_enabled=False))
    clone.layout.mount.mkdir(mode=0o755)
    subprocess.run(["cp", "-a", str(parent.pgdata), str(clone.pgdata)], check=True)
    subprocess.run(["cp", "-a", str(parent.layout.log_dir), str(clone.layout.log_dir)], check=True)
    # The copy's pid file names the parent's live postmaster: never adopt it.
    assert (clone.pgdata / PIDFILE).exists()
    assert process.find_live_postmaster(clone.pgdata) is None

    prepare_clone(clone.pgdata, clone.layout.log_file, clone.settings)
    assert not (clone.pgdata / PIDFILE).exists()
    assert not (clone.pgdata / "postmaster.opts").exists()
    assert list((clone.pgdata / "pg_replslot").iterdir()) == []
    auto = (clone.pgdata / "postgresql.auto.conf").read_text()
    for name in ("archive_command", "restore_command", "primary_conninfo"):
        assert name not in auto
    assert "work_mem" in auto
    assert clone.layout.log_file.stat().st_size == 0
    assert (clone.socket_dir.stat().st_mode & 0o777) == 0o700

    clone.start()
    assert q(clone, "SELECT count(*), max(v) FROM t") == [(1000, "row 999")]
    assert q(clone, "SELECT slot_name FROM pg_replication_slots") == []
    assert q(clone, "SHOW archive_command") in ([("",)], [("(disabled)",)])
    assert q(clone, "SHOW archive_mode") == [("off",)]
    assert q(clone, "SHOW primary_conninfo") == [("",)]
    assert q(clone, "SHOW port") == [(str(clone.port),)]
    assert q(clone, "SHOW max_logical_replication_workers") == [("0",)]
    # The parent is untouched and keeps its slot.
    assert q(parent, "SELECT slot_name FROM pg_replication_slots") == [("inherited_slot",)]

    # Subscriptions: disable them with workers off, then restart with workers on.
    assert asyncio.run(sql.checkpoint_for_snapshot(clone.socket_dir, clone.port)) == 2
    assert asyncio.run(disable_subscriptions(clone.socket_dir, clone.port)) == 2
    rows = q(clone, "SELECT subname, subenabled, subslotname FROM pg_subscription ORDER BY 1")
    assert rows == [("Sub One", False, None), ("sub2", False, None)]
    clone.stop()
    settings = dataclasses.replace(clone.settings, logical_workers_enabled=True)
    write_settings(clone.pgdata, settings)
    clone.start()
    assert q(clone, "SHOW max_logical_replication_workers") != [("0",)]
    assert asyncio.run(sql.checkpoint_for_snapshot(clone.socket_dir, clone.port)) == 2
    # And the clone is reachable over TCP with its own password only.
    asyncio.run(sql.set_password(clone.socket_dir, clone.port, "postgres", "clonepw"))
    uri = sql.connection_uri("127.0.0.1", clone.port, "postgres", "clonepw", 'odd "db"')
    with psycopg.connect(uri, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ('odd "db"',)
