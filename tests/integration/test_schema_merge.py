"""Schema diff and three-way merge through cygnetd: real branches on zfs-fuse, real gRPC."""

from __future__ import annotations

import subprocess
from typing import Any

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import schema_pb2 as spb
from cygnet.api.v1 import schema_pb2_grpc
from tests.conftest import unique
from tests.harness import VENV_BIN, Daemon, query

pytestmark = pytest.mark.integration


def schema(d: Daemon) -> Any:
    return schema_pb2_grpc.SchemaStub(d.channel())  # type: ignore[no-untyped-call]


def ref(db: str, branch: str = "main") -> pb.BranchRef:
    return pb.BranchRef(database=db, name=branch)


def merge(d: Daemon, db: str, source: str, target: str = "main", **kw: Any
          ) -> spb.MergeSchemaResponse:
    req = spb.MergeSchemaRequest(source=ref(db, source), target=ref(db, target), **kw)
    return schema(d).MergeSchema(req, timeout=300)  # type: ignore[no-any-return]


def temp_datasets(d: Daemon) -> list[str]:
    return [n for n in d.pool.datasets() if "/tmp/" in n or "@tm" in n]


@pytest.fixture(scope="module")
def shop(daemon: Daemon) -> dict[str, Any]:
    """A database whose main has a table with rows, and a branch `feature` of it."""
    name = unique("schema")
    with daemon.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                              timeout=120)
        query(db.connection, "CREATE TABLE users (id int PRIMARY KEY, name text, "
                             "status text DEFAULT 'new');"
                             "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 50) g")
        feature = s.CreateBranch(pb.CreateBranchRequest(database=name, name="feature"),
                                 timeout=120)
    return {"name": name, "main": db.connection, "feature": feature.connection}


def test_diff_then_merge_applies_source_changes_not_data(daemon: Daemon,
                                                         shop: dict[str, Any]) -> None:
    name, main, feature = shop["name"], shop["main"], shop["feature"]
    query(feature, "ALTER TABLE users ADD COLUMN email text;"
                   "CREATE INDEX users_email ON users (email);"
                   "CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users(id));"
                   "INSERT INTO orders VALUES (1, 1)")
    query(main, "CREATE TABLE audit (at timestamptz)")  # the target's own change

    diff = schema(daemon).SchemaDiff(spb.SchemaDiffRequest(a=ref(name), b=ref(name, "feature")),
                                     timeout=120)
    assert diff.a == f"{name}/main" and diff.b == f"{name}/feature"
    changed = {(c.action, c.kind, c.name) for c in diff.changes}
    assert ("create", "column", "public.users.email") in changed
    assert ("drop", "table", "public.audit") in changed  # a two-way diff: B is the goal
    assert diff.script.index("CREATE TABLE public.orders") < diff.script.index(
        "orders_user_id_fkey")

    dry = merge(daemon, name, "feature", dry_run=True)
    assert dry.outcome == "dry-run" and not dry.applied, dry
    assert dry.rehearsal.ok and "where the lineages split" in dry.base
    assert "data is not merged" in dry.note.lower() or "only the schema" in dry.note.lower()
    assert query(main, "SELECT count(*) FROM information_schema.columns "
                       "WHERE table_name = 'users' AND column_name = 'email'") == [(0,)]

    done = merge(daemon, name, "feature")
    assert done.outcome == "merged" and done.applied, done
    # Schema came over, the target's own table stayed, the source's rows did not.
    assert query(main, "SELECT count(*) FROM orders") == [(0,)]
    assert query(main, "SELECT count(*) FROM users") == [(50,)]
    assert query(main, "SELECT count(*) FROM audit") == [(0,)]
    again = schema(daemon).SchemaDiff(spb.SchemaDiffRequest(a=ref(name), b=ref(name, "feature")),
                                      timeout=120)
    assert {(c.action, c.name) for c in again.changes} == {("drop", "public.audit"),
                                                          ("drop", "public.audit.at")}
    assert not temp_datasets(daemon)


def test_next_merge_starts_from_the_last_one(daemon: Daemon, shop: dict[str, Any]) -> None:
    """The merge base moves: what main dropped after a merge is not brought back."""
    name, main, feature = shop["name"], shop["main"], shop["feature"]
    if query(main, "SELECT to_regclass('public.orders') IS NULL") == [(True,)]:
        pytest.skip("needs the first merge")
    query(main, "DROP TABLE orders")
    query(feature, "CREATE TABLE invoices (id int)")
    done = merge(daemon, name, "feature")
    assert done.outcome == "merged" and "the last merge" in done.base, done
    assert {(c.action, c.kind, c.name) for c in done.changes if c.kind == "table"} == {
        ("create", "table", "public.invoices")}
    assert query(main, "SELECT to_regclass('public.orders') IS NULL") == [(True,)]


def test_conflicts_show_three_versions_and_apply_nothing(daemon: Daemon) -> None:
    name = unique("conf")
    with daemon.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                              timeout=120)
        query(db.connection, "CREATE TABLE t (id int, s text DEFAULT 'a')")
        b = s.CreateBranch(pb.CreateBranchRequest(database=name, name="dev"), timeout=120)
    query(b.connection, "ALTER TABLE t ALTER COLUMN s SET DEFAULT 'b'; CREATE TABLE extra (x int)")
    query(db.connection, "ALTER TABLE t ALTER COLUMN s SET DEFAULT 'c'")
    out = merge(daemon, name, "dev")
    assert out.outcome == "conflicts" and not out.applied
    (c,) = out.conflicts
    assert c.kind == "column" and "public.t.s" in c.name
    assert "'a'" in c.base and "'b'" in c.source and "'c'" in c.target
    assert query(db.connection, "SELECT to_regclass('public.extra') IS NULL") == [(True,)]


def test_rename_hint_keeps_data_and_rehearsal_failure_applies_nothing(daemon: Daemon) -> None:
    name = unique("ren")
    with daemon.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                              timeout=120)
        query(db.connection, "CREATE TABLE p (id int, nick text);"
                             "INSERT INTO p VALUES (1, 'ann'), (2, NULL)")
        b = s.CreateBranch(pb.CreateBranchRequest(database=name, name="dev"), timeout=120)
    query(b.connection, "ALTER TABLE p RENAME COLUMN nick TO handle")
    plain = merge(daemon, name, "dev", dry_run=True)
    assert any(h.kind == "rename" and "public.p.nick" in h.object for h in plain.hazards)
    assert any(h.kind == "drops-data" for h in plain.hazards)
    out = merge(daemon, name, "dev", renames=["public.p.nick=handle"])
    assert out.outcome == "merged", out
    assert query(db.connection, "SELECT handle FROM p ORDER BY id") == [("ann",), (None,)]
    # A NOT NULL the target's rows break: the rehearsal fails and nothing is applied.
    query(b.connection, "DELETE FROM p WHERE handle IS NULL;"
                        "ALTER TABLE p ALTER COLUMN handle SET NOT NULL;"
                        "CREATE TABLE q (id int)")
    bad = merge(daemon, name, "dev")
    assert bad.outcome == "rehearsal-failed" and not bad.applied, bad
    assert not bad.rehearsal.ok and "null" in bad.rehearsal.error.lower()
    assert query(db.connection, "SELECT to_regclass('public.q') IS NULL") == [(True,)]


def test_concurrent_index_runs_after_the_transaction(daemon: Daemon, shop: dict[str, Any]
                                                     ) -> None:
    name, main, feature = shop["name"], shop["main"], shop["feature"]
    query(feature, "CREATE INDEX users_name ON users (name)")
    out = merge(daemon, name, "feature", concurrently=True)
    assert out.outcome == "merged", out
    (stmt,) = [s for s in out.statements if "users_name" in s.sql]
    assert stmt.when == "after" and "CONCURRENTLY" in stmt.sql
    assert any(h.kind == "non-transactional" for h in out.hazards)
    assert query(main, "SELECT indisvalid FROM pg_index WHERE indexrelid = "
                       "'public.users_name'::regclass") == [(True,)]


def test_refusals(daemon: Daemon, shop: dict[str, Any]) -> None:
    name = shop["name"]
    other = unique("other")
    with daemon.stub() as s:
        s.CreateDatabase(pb.CreateDatabaseRequest(name=other, size_class="nano"), timeout=120)
    with pytest.raises(grpc.RpcError) as err:
        schema(daemon).MergeSchema(spb.MergeSchemaRequest(
            source=ref(other), target=ref(name)), timeout=60)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unrelated lineages" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        schema(daemon).MergeSchema(spb.MergeSchemaRequest(
            source=ref(name, "feature"), target=ref(name), renames=["users"]), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "renames" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        schema(daemon).SchemaDiff(spb.SchemaDiffRequest(a=ref(name), b=ref(name, "feature"),
                                                        dbname="nope"), timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_cli_diff_sql(daemon: Daemon, shop: dict[str, Any]) -> None:
    name = shop["name"]
    query(shop["feature"], "CREATE VIEW named AS SELECT id, name FROM users")
    out = subprocess.run([str(VENV_BIN / "cygnet"), "--socket", str(daemon.socket), "schema",
                          "diff", f"{name}/main", f"{name}/feature", "--sql"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "CREATE VIEW public.named AS" in out.stdout and out.stdout.startswith("BEGIN;")
