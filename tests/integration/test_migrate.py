"""Migrations per branch through the CLI and cygnetd: real branches, real Postgres."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import schema_pb2 as spb
from cygnet.api.v1 import schema_pb2_grpc
from cygnet.errors import FailedPrecondition
from cygnet.migrate import run as M
from cygnet.migrate.files import read_dir
from tests.conftest import unique
from tests.harness import Daemon, query
from tests.integration import pg_helpers
from tests.integration.pg_helpers import PgEnv, make_base
from tests.integration.test_cli_support import CONFLICT, INVALID, cygnet

pytestmark = pytest.mark.integration
pg_template = pg_helpers.pg_template

MIGRATIONS = {
    "001_users.up.sql": "CREATE TABLE users (id int PRIMARY KEY, name text);\n"
                        "INSERT INTO users VALUES (1, 'a');",
    "001_users.down.sql": "DROP TABLE users;",
    "002_email.up.sql": "ALTER TABLE users ADD COLUMN email text;",
    "002_email.down.sql": "ALTER TABLE users DROP COLUMN email;",
    "003_orders.up.sql": "CREATE TABLE orders (id int PRIMARY KEY, "
                         "user_id int REFERENCES users (id));",
    "003_orders.down.sql": "DROP TABLE orders;",
}


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def columns(conn: pb.Connection, table: str) -> list[str]:
    return [str(r[0]) for r in query(conn, "SELECT column_name FROM information_schema.columns "
                                      f"WHERE table_name = '{table}' ORDER BY ordinal_position")]


def test_engine_records_locks_and_refuses_changed_files(pg_template: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    """The migration engine alone, on a plain cluster (no ZFS, no daemon)."""
    template, bindir = pg_template
    env = PgEnv(make_base("/var/tmp/cygnet-pgtest-"), make_base("/tmp/cygs-"), template, bindir)
    try:
        cluster = env.new_cluster("migrate")
        cluster.start()
        with psycopg.connect(host=str(cluster.socket_dir), port=cluster.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            files = read_dir(write(tmp_path / "m", MIGRATIONS))
            runs = M.apply(conn, files)
            assert [r.version for r in runs] == [1, 2, 3]
            assert ("relation", "public.users", "AccessExclusiveLock") in runs[1].locks
            assert M.apply(conn, files) == []
            assert [r.state for r in M.status(conn, files)] == ["applied"] * 3
            (tmp_path / "m" / "001_users.up.sql").write_text("CREATE TABLE users (id int);")
            with pytest.raises(FailedPrecondition, match=r"001_users\.up\.sql"):
                M.apply(conn, read_dir(tmp_path / "m"))
            back = M.rollback(conn, files, 0)
            assert [r.version for r in back] == [3, 2, 1]
            assert M.records(conn) == {}
            assert conn.execute("SELECT to_regclass('users')").fetchone() == (None,)
    finally:
        env.cleanup()
        shutil.rmtree(env.base, ignore_errors=True)
        shutil.rmtree(env.socket_base, ignore_errors=True)


@pytest.fixture(scope="module")
def shop(daemon: Daemon) -> dict[str, Any]:
    name = unique("migrate")
    with daemon.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                              timeout=120)
        feature = s.CreateBranch(pb.CreateBranchRequest(database=name, name="feature"),
                                 timeout=120)
    return {"name": name, "main": db.connection, "feature": feature.connection}


def test_apply_rehearsed_status_checksum_and_rollback(daemon: Daemon, shop: dict[str, Any],
                                                      tmp_path: Path) -> None:
    name, feature = shop["name"], shop["feature"]
    d = write(tmp_path / "m", {k: v for k, v in MIGRATIONS.items() if not k.startswith("003")})
    out = cygnet(daemon, "migrate", "apply", f"{name}/feature", str(d), "--rehearse",
                 "--json").json()
    assert [r["version"] for r in out["rehearsal"]] == [1, 2]
    assert [r["version"] for r in out["ran"]] == [1, 2]
    # The ADD COLUMN took an ACCESS EXCLUSIVE lock on users: the rehearsal says so.
    email = out["rehearsal"][1]
    assert {"locktype": "relation", "relation": "public.users",
            "mode": "AccessExclusiveLock"} in email["locks"], email
    assert columns(feature, "users") == ["id", "name", "email"]
    assert query(feature, "SELECT version, name, length(checksum), duration_seconds >= 0 "
                          "FROM cygnet_migrate.schema_migrations ORDER BY 1") == [
        (1, "users", 64, True), (2, "email", 64, True)]
    # main was not touched, and the throwaway clone is gone.
    assert columns(shop["main"], "users") == []
    assert not [n for n in daemon.pool.datasets() if "/tmp/" in n or "@tm" in n]

    # A new file is pending; applying again runs only it.
    write(d, {k: v for k, v in MIGRATIONS.items() if k.startswith("003")})
    st = cygnet(daemon, "migrate", "status", f"{name}/feature", "--dir", str(d), "--json").json()
    assert [(m["version"], m["state"]) for m in st["migrations"]] == [
        (1, "applied"), (2, "applied"), (3, "pending")]
    again = cygnet(daemon, "migrate", "apply", f"{name}/feature", str(d), "--json").json()
    assert [r["version"] for r in again["ran"]] == [3] and not again["rehearsal"]

    # An applied file that changed is an error naming it; nothing runs.
    (d / "002_email.up.sql").write_text("ALTER TABLE users ADD COLUMN email varchar(9);")
    bad = cygnet(daemon, "migrate", "apply", f"{name}/feature", str(d), expect=None)
    assert bad.code == CONFLICT and "002_email.up.sql" in bad.err, bad
    st = cygnet(daemon, "migrate", "status", f"{name}/feature", "--dir", str(d), "--json").json()
    assert st["migrations"][1]["state"] == "changed"
    (d / "002_email.up.sql").write_text(MIGRATIONS["002_email.up.sql"])

    # Rollback to 1: the down files of 3 and 2 run, newest first.
    back = cygnet(daemon, "migrate", "rollback", f"{name}/feature", "--to", "1", "--dir",
                  str(d), "--json").json()
    assert [(r["version"], r["direction"]) for r in back["ran"]] == [(3, "down"), (2, "down")]
    assert columns(feature, "users") == ["id", "name"] and columns(feature, "orders") == []
    assert query(feature, "SELECT version FROM cygnet_migrate.schema_migrations") == [(1,)]


def test_failed_migration_and_failed_rehearsal_leave_no_record(
        daemon: Daemon, shop: dict[str, Any], tmp_path: Path) -> None:
    name = shop["name"]
    d = write(tmp_path / "bad", {"001_t.up.sql": "CREATE TABLE t (x int);",
                                 "002_boom.up.sql": "CREATE TABLE u (x int); SELECT 1/0;"})
    failed = cygnet(daemon, "migrate", "apply", f"{name}/main", str(d), "--rehearse",
                    expect=None)
    assert failed.code == CONFLICT, failed
    assert "002_boom.up.sql failed: division by zero" in failed.err
    assert "rehearsal" in failed.err and "nothing was applied" in failed.err
    assert columns(shop["main"], "t") == []  # the rehearsal failed: main untouched
    direct = cygnet(daemon, "migrate", "apply", f"{name}/main", str(d), expect=None)
    assert direct.code == CONFLICT and "002_boom.up.sql" in direct.err
    # 001 stays applied and recorded, 002 is rolled back whole (u does not exist).
    assert columns(shop["main"], "t") == ["x"] and columns(shop["main"], "u") == []
    assert query(shop["main"], "SELECT version FROM cygnet_migrate.schema_migrations") == [(1,)]
    layout = cygnet(daemon, "migrate", "apply", f"{name}/main",
                    str(write(tmp_path / "odd", {"1_x.sql": ""})), expect=None)
    assert layout.code == INVALID and "1_x.sql" in layout.err


def test_records_travel_with_a_schema_merge(daemon: Daemon, tmp_path: Path) -> None:
    name = unique("migmerge")
    with daemon.stub() as s:
        s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"), timeout=120)
        s.CreateBranch(pb.CreateBranchRequest(database=name, name="dev"), timeout=120)
    d = write(tmp_path / "m", {k: v for k, v in MIGRATIONS.items() if k.startswith("00")})
    cygnet(daemon, "migrate", "apply", f"{name}/dev", str(d))
    stub = schema_pb2_grpc.SchemaStub(daemon.channel())  # type: ignore[no-untyped-call]
    merged = stub.MergeSchema(spb.MergeSchemaRequest(
        source=pb.BranchRef(database=name, name="dev"),
        target=pb.BranchRef(database=name, name="main")), timeout=300)
    assert merged.outcome == "merged", merged
    st = cygnet(daemon, "migrate", "status", f"{name}/main", "--dir", str(d), "--json").json()
    assert [(m["version"], m["state"]) for m in st["migrations"]] == [
        (1, "applied"), (2, "applied"), (3, "applied")]
    assert {m["origin"] for m in st["migrations"]} == {f"merge from {name}/dev"}
    # Data is not merged: the row migration 1 inserted on dev is not on main.
    again = cygnet(daemon, "migrate", "apply", f"{name}/main", str(d), "--json").json()
    assert again["ran"] == []
