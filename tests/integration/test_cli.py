"""The `cygnet` CLI end to end against the session daemon: every command, --json shapes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import unique
from tests.harness import Daemon
from tests.integration.test_cli_support import (
    ANSI,
    BRANCH_KEYS,
    CONNECTION_KEYS,
    CYGNET,
    DATABASE_KEYS,
    ISO_UTC,
    NOT_FOUND,
    SNAPSHOT_KEYS,
    cli_env,
    cygnet,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shop(daemon: Daemon) -> Iterator[dict[str, Any]]:
    """One database for this module, created (and finally deleted) through the CLI."""
    name = unique("cli")
    created = cygnet(daemon, "db", "create", name, "--size", "nano", "--json").json()
    yield created
    cygnet(daemon, "db", "rm", name, "--yes", expect=None)


def sql(uri: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(uri, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def test_db_create_json_shape(shop: dict[str, Any]) -> None:
    assert set(shop) == {"database", "main_branch", "connection"}
    db, main, conn = shop["database"], shop["main_branch"], shop["connection"]
    assert set(db) == DATABASE_KEYS
    assert set(main) == BRANCH_KEYS
    assert set(conn) == CONNECTION_KEYS
    assert db["size_class"] == "nano" and db["main_branch_id"] == main["id"]
    assert ISO_UTC.fullmatch(db["created_at"]) and ISO_UTC.fullmatch(main["created_at"])
    assert main["name"] == "main" and main["state"] == "running"
    assert main["parent_branch_id"] is None and main["origin_snapshot"] is None
    assert isinstance(main["used_bytes"], int) and isinstance(main["port"], int)
    assert conn["uri"].startswith("postgresql://") and conn["port"] == main["port"]
    assert sql(conn["uri"], "select 1") == [(1,)]


def test_db_list_and_show(daemon: Daemon, shop: dict[str, Any]) -> None:
    name = shop["database"]["name"]
    listed = cygnet(daemon, "db", "list", "--json").json()
    mine = [d for d in listed if d["name"] == name]
    assert len(mine) == 1 and set(mine[0]) == DATABASE_KEYS
    # The global flag works as well as the per-command one.
    shown = cygnet(daemon, "--json", "db", "show", name).json()
    assert set(shown) == DATABASE_KEYS | {"branches"}
    assert [b["name"] for b in shown["branches"]] == ["main"]
    table = cygnet(daemon, "db", "list").out
    assert "NAME" in table and name in table and not ANSI.search(table)
    human = cygnet(daemon, "db", "show", shop["database"]["id"]).out
    assert name in human and "main" in human and "running" in human


def test_branch_lifecycle(daemon: Daemon, shop: dict[str, Any]) -> None:
    db = shop["database"]["name"]
    sql(shop["connection"]["uri"], "create table t (v int); insert into t values (1)")
    made = cygnet(daemon, "branch", "create", f"{db}/feat", "--json").json()
    assert set(made) == {"branch", "connection"}
    feat = made["branch"]
    assert set(feat) == BRANCH_KEYS and feat["parent_branch_name"] == "main"
    assert feat["state"] == "running"
    uri = cygnet(daemon, "connect", f"{db}/feat", "--direct").out.strip()
    assert uri == made["connection"]["uri"]
    assert sql(uri, "select v from t") == [(1,)]

    # Snapshot, change, reset to the snapshot: the change is gone.
    snap = cygnet(daemon, "snapshot", "create", f"{db}/feat", "clean", "--json").json()
    assert set(snap) == SNAPSHOT_KEYS and snap["branch_id"] == feat["id"]
    sql(uri, "insert into t values (2)")
    reset = cygnet(daemon, "branch", "reset", "feat", "--db", db, "--to", "clean", "--yes",
                   "--json").json()
    assert reset["id"] == feat["id"] and reset["state"] == "running"
    assert sql(uri, "select v from t order by v") == [(1,)]

    # A child of feat from its snapshot, addressed by id.
    child = cygnet(daemon, "branch", "create", "child", "--db", db, "--from", "feat",
                   "--snapshot", "clean", "--json").json()["branch"]
    assert child["parent_branch_id"] == feat["id"]
    shown = cygnet(daemon, "branch", "show", child["id"], "--json").json()
    assert shown["name"] == "child" and shown["database_name"] == db

    _check_tree(daemon, db, feat["id"], child["id"])
    _check_listings(daemon, db, feat["id"])

    # Deleting feat needs --cascade (child exists); then both are gone.
    deleted = cygnet(daemon, "branch", "rm", f"{db}/feat", "--cascade", "--yes", "--json").json()
    assert set(deleted["deleted_branch_ids"]) == {feat["id"], child["id"]}
    cygnet(daemon, "branch", "show", f"{db}/feat", expect=NOT_FOUND)


def _check_tree(daemon: Daemon, db: str, feat_id: str, child_id: str) -> None:
    drawn = cygnet(daemon, "branch", "tree", db).out
    lines = drawn.splitlines()
    assert lines[0].startswith(db)
    (main_line,) = [ln for ln in lines if " main " in ln]
    (feat_line,) = [ln for ln in lines if " feat " in ln]
    (child_line,) = [ln for ln in lines if " child " in ln]
    # Deeper in the lineage -> further indented.
    assert main_line.index("main") < feat_line.index("feat") < child_line.index("child")
    assert "running" in child_line and "ago" in child_line and "B" in child_line
    assert not ANSI.search(drawn)
    (entry,) = cygnet(daemon, "branch", "tree", db, "--json").json()
    assert set(entry) == {"database", "branches"} and entry["database"]["name"] == db
    (main,) = entry["branches"]
    assert main["name"] == "main" and set(main) == BRANCH_KEYS | {"children"}
    (feat,) = main["children"]
    assert feat["id"] == feat_id and [c["id"] for c in feat["children"]] == [child_id]


def _check_listings(daemon: Daemon, db: str, feat_id: str) -> None:
    branches = cygnet(daemon, "branch", "list", db, "--json").json()
    assert [b["name"] for b in branches] == ["main", "feat", "child"]
    table = cygnet(daemon, "branch", "list").out
    assert "feat" in table and "child" in table and "STATE" in table
    snaps = cygnet(daemon, "snapshot", "list", f"{db}/feat", "--json").json()
    assert [s["name"] for s in snaps] == ["clean"] and set(snaps[0]) == SNAPSHOT_KEYS
    assert snaps[0]["dependent_branch_ids"]  # child was cloned from it
    assert "clean" in cygnet(daemon, "snapshot", "list", feat_id).out


def test_stop_start_and_snapshot_rm(daemon: Daemon, shop: dict[str, Any]) -> None:
    db = shop["database"]["name"]
    stopped = cygnet(daemon, "branch", "stop", db, "--json").json()  # bare DB: main
    assert stopped["name"] == "main" and stopped["state"] == "stopped"
    assert not stopped["desired_running"]
    started = cygnet(daemon, "branch", "start", f"{db}/main", "--json").json()
    assert started["state"] == "running"
    assert sql(shop["connection"]["uri"], "select 1") == [(1,)]
    cygnet(daemon, "snapshot", "create", db, "tmp")
    removed = cygnet(daemon, "snapshot", "rm", db, "tmp", "--json").json()
    assert set(removed) == {"snapshot_id"}
    assert cygnet(daemon, "snapshot", "list", db, "--json").json() == []


def test_connect(daemon: Daemon, shop: dict[str, Any]) -> None:
    db = shop["database"]["name"]
    conn = cygnet(daemon, "connect", db, "--json").json()
    assert set(conn) == CONNECTION_KEYS and conn == shop["connection"]
    out = cygnet(daemon, "connect", db, "--psql", "--", "-tAc", "select 40 + 2").out
    assert out.strip() == "42"


def test_host_status_and_version(daemon: Daemon) -> None:
    host = cygnet(daemon, "host", "status", "--json").json()
    assert {"host_id", "hostname", "version", "zfs_dialect", "pools", "database_count",
            "branch_count", "running_clusters", "postgres_versions"} == set(host)
    (pool,) = host["pools"]
    assert pool["name"] == daemon.pool.name and pool["size_bytes"] > pool["free_bytes"] > 0
    assert daemon.pool.name in cygnet(daemon, "host", "status").out
    version = cygnet(daemon, "version", "--json").json()
    assert version == {"client_version": host["version"], "daemon_version": host["version"]}
    lines = cygnet(daemon, "version").out.splitlines()
    assert lines == [f"cygnet {host['version']}", f"cygnetd {host['version']}"]


def complete(daemon: Daemon, *words: str) -> list[str]:
    """What bash completion offers for the last of `words` (asks the daemon for names)."""
    line = ["cygnet", "--socket", str(daemon.socket), *words]
    env = cli_env(_CYGNET_COMPLETE="bash_complete", COMP_WORDS=" ".join(line),
                  COMP_CWORD=str(len(line) - 1))
    out = subprocess.run([CYGNET], capture_output=True, text=True, env=env, timeout=30).stdout
    return [ln.split(",", 1)[1] for ln in out.splitlines()]


def test_completion_of_names(daemon: Daemon, shop: dict[str, Any]) -> None:
    db = shop["database"]["name"]
    assert complete(daemon, "connect", db[:-1]) == [db]
    assert complete(daemon, "db", "show", db) == [db]
    assert complete(daemon, "branch", "rm", f"{db}/m") == [f"{db}/main"]
