"""Schema diff against the oracle: after the diff's DDL runs on A, pg_dump of A equals B's."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cygnet.agent.schema_service import Endpoint, read_at
from cygnet.errors import InvalidArgument
from cygnet.schema.apply import apply
from cygnet.schema.ddl import AFTER_TX, BEFORE_TX, Stmt
from cygnet.schema.merge import Rename
from cygnet.schema.plan import plan
from tests.integration import pg_helpers
from tests.integration.pg_helpers import PgEnv, make_base
from tests.integration.schema_helpers import SchemaCluster, databases

pytestmark = pytest.mark.integration

pg_template = pg_helpers.pg_template


@pytest.fixture(scope="module")
def sc(pg_template: tuple[Path, Path]) -> Iterator[SchemaCluster]:
    template, bindir = pg_template
    env = PgEnv(make_base("/var/tmp/cygnet-pgtest-"), make_base("/tmp/cygs-"), template, bindir)
    try:
        cluster = env.new_cluster("schema")
        cluster.start()
        s = SchemaCluster(cluster)
        s.make_fast()
        s.run("postgres", "CREATE ROLE cyg_reader", "CREATE ROLE cyg_writer")
        yield s
    finally:
        env.cleanup()
        shutil.rmtree(env.base, ignore_errors=True)
        shutil.rmtree(env.socket_base, ignore_errors=True)


def converge(sc: SchemaCluster, a: str, b: str, *, again: bool = True) -> str:
    """Applies diff(a -> b) to a; returns the script. Asserts the oracle."""
    p = plan(sc.catalog(a), sc.catalog(b))
    script = p.script()
    sc.run_script(a, script)
    dump_a, dump_b = sc.dump(a), sc.dump(b)
    only_a = [s for s in dump_a if s not in dump_b]
    only_b = [s for s in dump_b if s not in dump_a]
    assert (only_a, only_b) == ([], []), script
    if again:
        rest = plan(sc.catalog(a), sc.catalog(b))
        assert rest.changes == [], [c.key for c in rest.changes]
    return script


RICH = [
    "CREATE SCHEMA app",
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",  # placeholder replaced below if missing
    "CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE DOMAIN app.posint AS integer DEFAULT 1 NOT NULL CONSTRAINT pos CHECK (VALUE > 0)",
    "CREATE TYPE app.pair AS (a integer, b text)",
    "CREATE SEQUENCE app.counter AS integer START WITH 10 INCREMENT BY 5",
    "CREATE FUNCTION app.twice(x integer) RETURNS integer LANGUAGE sql IMMUTABLE "
    "AS $$ SELECT x * 2 $$",
    "CREATE TABLE app.users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "email text NOT NULL UNIQUE, mood app.mood DEFAULT 'ok', n app.posint, "
    "n2 integer GENERATED ALWAYS AS (app.twice(n)) STORED, "
    "c integer DEFAULT nextval('app.counter'), CHECK (email <> ''))",
    "CREATE TABLE app.orders (id serial PRIMARY KEY, user_id bigint REFERENCES app.users(id) "
    "ON DELETE CASCADE, total numeric(10,2), placed timestamptz DEFAULT now())",
    "CREATE INDEX orders_big ON app.orders (total) WHERE total > 100",
    "CREATE INDEX users_lower ON app.users (lower(email))",
    "CREATE VIEW app.big_orders AS SELECT o.id, u.email FROM app.orders o "
    "JOIN app.users u ON u.id = o.user_id WHERE o.total > 100",
    "CREATE MATERIALIZED VIEW app.totals AS SELECT user_id, sum(total) AS s FROM app.orders "
    "GROUP BY user_id",
    "CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "NEW.placed := now(); RETURN NEW; END $$",
    "CREATE TRIGGER orders_touch BEFORE UPDATE ON app.orders FOR EACH ROW "
    "EXECUTE FUNCTION app.touch()",
    "CREATE PROCEDURE app.noop() LANGUAGE sql AS $$ SELECT 1 $$",
    "ALTER TABLE app.users ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY own ON app.users FOR SELECT TO cyg_reader USING (email = current_user)",
    "GRANT SELECT ON app.users TO cyg_reader",
    "GRANT USAGE ON SCHEMA app TO cyg_reader",
    "GRANT UPDATE (email) ON app.users TO cyg_writer",
    "REVOKE EXECUTE ON FUNCTION app.twice(integer) FROM PUBLIC",
    "COMMENT ON TABLE app.users IS 'people'",
    "COMMENT ON COLUMN app.users.email IS 'it''s unique'",
    "CREATE TABLE app.events (at date NOT NULL, what text) PARTITION BY RANGE (at)",
    "CREATE TABLE app.events_2026 PARTITION OF app.events "
    "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    "CREATE INDEX events_at ON app.events (at)",
    "CREATE TABLE app.rooms (r int, during tstzrange, EXCLUDE USING gist (during WITH &&))",
]


def rich(sc: SchemaCluster) -> list[str]:
    with sc.connect() as c:
        have = c.execute("SELECT count(*) FROM pg_available_extensions "
                         "WHERE name = 'pg_trgm'").fetchone()
    return [s for s in RICH if "pg_trgm" not in s or (have and have[0])]


def test_empty_to_rich_and_back(sc: SchemaCluster) -> None:
    with databases(sc) as (a, b):
        sc.run(b, *rich(sc))
        script = converge(sc, a, b)
        assert script.index("CREATE SCHEMA app") < script.index("CREATE TABLE app.users")
        assert script.index("CREATE TABLE app.users") < script.index("REFERENCES app.users")
        # And back: everything dropped, dependents first.
        with databases(sc, 1) as (empty,):
            script = converge(sc, a, empty)
            assert script.index("DROP VIEW app.big_orders") < script.index(
                "DROP TABLE app.orders")


BEFORE = [
    "CREATE TYPE mood AS ENUM ('sad', 'happy')",
    "CREATE DOMAIN posint AS integer CHECK (VALUE > 0)",
    "CREATE TABLE t (id integer PRIMARY KEY, n integer, s varchar(10), m mood, "
    "gone text, old_name integer)",
    "CREATE VIEW tv AS SELECT id, n FROM t",
    "CREATE VIEW tvv AS SELECT * FROM tv",
    "CREATE FUNCTION f(x integer) RETURNS integer LANGUAGE sql AS $$ SELECT x $$",
    "CREATE FUNCTION g() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
    "CREATE TRIGGER tg BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION g()",
    "CREATE TABLE p (k integer NOT NULL) PARTITION BY LIST (k)",
    "CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1)",
    "CREATE TABLE loose (k integer NOT NULL)",
    "CREATE SEQUENCE sq",
    "GRANT SELECT ON t TO cyg_reader",
    "COMMENT ON VIEW tv IS 'v'",
]
AFTER = [
    "ALTER TYPE mood ADD VALUE 'ok' BEFORE 'happy'",
    "ALTER TYPE mood ADD VALUE 'ecstatic'",
    "ALTER DOMAIN posint ADD CONSTRAINT small CHECK (VALUE < 1000)",
    "DROP VIEW tvv", "DROP VIEW tv",
    "ALTER TABLE t ALTER COLUMN n TYPE bigint",
    "CREATE VIEW tv AS SELECT id, n FROM t", "CREATE VIEW tvv AS SELECT * FROM tv",
    "COMMENT ON VIEW tv IS 'v'",
    "ALTER TABLE t ALTER COLUMN s TYPE varchar(20)",
    "ALTER TABLE t ALTER COLUMN m SET DEFAULT 'ok'",
    "ALTER TABLE t DROP COLUMN gone",
    "ALTER TABLE t RENAME COLUMN old_name TO new_name",
    "ALTER TABLE t ALTER COLUMN s SET NOT NULL",
    "ALTER TABLE t DISABLE TRIGGER tg",
    "DROP FUNCTION f(integer)",
    "CREATE FUNCTION f(x bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT x $$",
    "ALTER TABLE p DETACH PARTITION p1",
    "ALTER TABLE p ATTACH PARTITION loose FOR VALUES IN (2)",
    "ALTER SEQUENCE sq OWNED BY t.n",
    "REVOKE SELECT ON t FROM cyg_reader",
    "GRANT INSERT ON t TO cyg_reader WITH GRANT OPTION",
    "ALTER TABLE t SET (fillfactor = 70)",
]


def test_changes_in_place_both_ways(sc: SchemaCluster) -> None:
    with databases(sc) as (a, b):
        sc.run(a, *BEFORE)
        sc.run(b, *BEFORE, *AFTER)
        script = converge(sc, a, b)
        # The enum grows in place (no DROP TYPE), before the transaction.
        assert "DROP TYPE" not in script
        assert script.index("ADD VALUE 'ok' BEFORE 'happy'") < script.index("BEGIN;")
        # The view over the retyped column is recreated around the ALTER TYPE.
        assert script.index("DROP VIEW public.tvv;") < script.index("DROP VIEW public.tv;")
        assert script.index("DROP VIEW public.tv;") < script.index("TYPE bigint")
        assert script.index("TYPE bigint") < script.index("CREATE VIEW public.tv ")
        # And back again.
        with databases(sc, 1) as (before,):
            sc.run(before, *BEFORE)
            converge(sc, a, before)


# --- random DDL: hypothesis against the pg_dump oracle ----------------------------

TABLES, COLUMNS = ["t1", "t2", "t3"], ["c1", "c2", "c3"]
COLUMN_TYPES = ["integer", "bigint", "text", "mood", "posint"]


def _ops() -> st.SearchStrategy[str]:
    return st.one_of(*_table_ops(), *_other_ops())


def _table_ops() -> list[st.SearchStrategy[str]]:
    """Tables, columns, constraints, indexes and views."""
    t, c, t2 = st.sampled_from(TABLES), st.sampled_from(COLUMNS), st.sampled_from(TABLES)
    typ = st.sampled_from(COLUMN_TYPES)
    n = st.integers(1, 3)
    return [
        st.builds(lambda t, c, ty: f"CREATE TABLE {t} (id integer PRIMARY KEY, {c} {ty})",
                  t, c, typ),
        st.builds(lambda t: f"CREATE TABLE {t} (id bigint GENERATED ALWAYS AS IDENTITY "
                  "PRIMARY KEY, c1 integer, c2 integer GENERATED ALWAYS AS (c1 * 2) STORED)", t),
        st.builds(lambda t, c, ty, nn: f"ALTER TABLE {t} ADD COLUMN {c} {ty}{nn}", t, c, typ,
                  st.sampled_from(["", " DEFAULT 7", " NOT NULL DEFAULT 1", " UNIQUE"])),
        st.builds(lambda t, c: f"ALTER TABLE {t} DROP COLUMN {c}", t, c),
        st.builds(lambda t, c, ty: f"ALTER TABLE {t} ALTER COLUMN {c} TYPE {ty} USING NULL",
                  t, c, st.sampled_from(["integer", "bigint", "text"])),
        st.builds(lambda t, c, a: f"ALTER TABLE {t} ALTER COLUMN {c} {a}", t, c, st.sampled_from(
            ["SET DEFAULT 5", "DROP DEFAULT", "SET NOT NULL", "DROP NOT NULL"])),
        st.builds(lambda t, c: f"ALTER TABLE {t} ADD CONSTRAINT {t}_{c}_pos CHECK ({c} > 0)",
                  t, c),
        st.builds(lambda t, c, r: f"ALTER TABLE {t} ADD FOREIGN KEY ({c}) REFERENCES {r}(id)",
                  t, c, t2),
        st.builds(lambda t, c, i, w: f"CREATE INDEX ix{i} ON {t} ({c}){w}", t, c, n,
                  st.sampled_from(["", " WHERE id > 10"])),
        st.builds(lambda t, c, i: f"CREATE INDEX ix{i} ON {t} (lower({c}::text))", t, c, n),
        st.builds(lambda i: f"DROP INDEX ix{i}", n),
        st.builds(lambda v, t, c: f"CREATE VIEW v{v} AS SELECT id, {c} FROM {t}", n, t, c),
        st.builds(lambda v: f"CREATE VIEW vv AS SELECT * FROM v{v}", n),
        st.builds(lambda v: f"DROP VIEW v{v}", n),
        st.builds(lambda t: f"DROP TABLE {t}", t),
    ]


def _other_ops() -> list[st.SearchStrategy[str]]:
    """Triggers, comments, grants, policies, types, sequences, functions, schemas,
    partitions and the rest."""
    t, c = st.sampled_from(TABLES), st.sampled_from(COLUMNS)
    n = st.integers(1, 3)
    return [
        st.builds(lambda t: f"CREATE TRIGGER trg BEFORE INSERT ON {t} FOR EACH ROW "
                  "EXECUTE FUNCTION touch()", t),
        st.builds(lambda t, x: f"COMMENT ON TABLE {t} IS '{x}'", t, st.sampled_from(["a", "b"])),
        st.builds(lambda t, c: f"COMMENT ON COLUMN {t}.{c} IS 'col'", t, c),
        st.builds(lambda t: f"GRANT SELECT, INSERT ON {t} TO cyg_reader", t),
        st.builds(lambda t, c: f"GRANT UPDATE ({c}) ON {t} TO cyg_writer", t, c),
        st.builds(lambda t: f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY", t),
        st.builds(lambda t: f"CREATE POLICY p ON {t} TO cyg_reader USING (id > 0)", t),
        st.just("ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'"),
        st.just("ALTER TYPE mood ADD VALUE 'ecstatic'"),
        st.just("CREATE SEQUENCE q1 START WITH 3"),
        st.just("ALTER SEQUENCE q1 INCREMENT BY 2"),
        st.just("CREATE OR REPLACE FUNCTION f1(x integer) RETURNS integer LANGUAGE sql "
                "AS $$ SELECT x + 1 $$"),
        st.just("CREATE OR REPLACE FUNCTION f1(x integer) RETURNS integer LANGUAGE sql "
                "AS $$ SELECT x + 2 $$"),
        st.just("CREATE SCHEMA s1"),
        st.just("CREATE TABLE s1.t (id serial PRIMARY KEY, c1 mood)"),
        st.just("CREATE TABLE ev (at date NOT NULL, c1 integer) PARTITION BY RANGE (at)"),
        st.just("CREATE TABLE ev_26 PARTITION OF ev FOR VALUES FROM ('2026-01-01') "
                "TO ('2027-01-01')"),
        st.just("CREATE INDEX ev_at ON ev (at)"),
        st.just("ALTER DOMAIN posint SET DEFAULT 3"),
        st.just("CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t1"),
        st.builds(lambda t, c: f"ALTER TABLE {t} RENAME COLUMN {c} TO {c}_r", t, c),
        st.builds(lambda t: f"ALTER TABLE {t} DISABLE TRIGGER trg", t),
        st.builds(lambda t, c: f"ALTER TABLE {t} ADD COLUMN {c} bigint GENERATED BY DEFAULT "
                  "AS IDENTITY", t, c),
        st.builds(lambda t, c, i: f"CREATE UNIQUE INDEX ux{i} ON {t} ({c}) WHERE {c} IS NOT "
                  "NULL", t, c, n),
        st.builds(lambda t: f"ALTER SEQUENCE q1 OWNED BY {t}.id", t),
        st.builds(lambda t: f"ALTER TABLE {t} SET (fillfactor = 80)", t),
        st.builds(lambda t: f"GRANT SELECT ON {t} TO PUBLIC", t),
        st.just("CREATE TYPE pair AS (a integer, b text)"),
        st.just("ALTER TYPE pair ADD ATTRIBUTE c bigint"),
        st.just("ALTER DOMAIN posint ADD CONSTRAINT small CHECK (VALUE < 100)"),
    ]


# What every random example starts from (the template of its two databases).
PRELUDE = ["CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
           "CREATE DOMAIN posint AS integer CHECK (VALUE > 0)",
           "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql "
           "AS $$ BEGIN RETURN NEW; END $$",
           "CREATE TABLE t1 (id integer PRIMARY KEY, c1 integer, c2 text, c3 mood)",
           "CREATE TABLE t2 (id integer PRIMARY KEY, c1 bigint, c2 posint)",
           "CREATE TABLE t3 (id integer PRIMARY KEY, c1 text)"]


@pytest.fixture(scope="module")
def pair(sc: SchemaCluster) -> Iterator[tuple[str, str]]:
    """Two databases that every random example empties and refills (cheaper than new ones)."""
    with databases(sc) as (a, b):
        yield a, b


RESET = ["DROP SCHEMA IF EXISTS public, s1 CASCADE", "CREATE SCHEMA public"]


def _apply_tolerantly(sc: SchemaCluster, dbname: str, ops: list[str]) -> None:
    """Runs each statement; the ones the current schema refuses are skipped."""
    with sc.connect(dbname) as c:
        for sql in ops:
            with contextlib.suppress(psycopg.Error):
                c.execute(sql)


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(common=st.lists(_ops(), max_size=6), only_a=st.lists(_ops(), max_size=10),
       only_b=st.lists(_ops(), max_size=10))
def test_random_ddl_converges(sc: SchemaCluster, pair: tuple[str, str], common: list[str],
                              only_a: list[str], only_b: list[str]) -> None:
    a, b = pair
    for db, own in ((a, only_a), (b, only_b)):
        sc.run(db, *RESET, *PRELUDE)
        _apply_tolerantly(sc, db, common + own)
    converge(sc, a, b, again=False)


def test_apply_outside_the_transaction_and_rename_reads(sc: SchemaCluster) -> None:
    """The merge's building blocks on a plain cluster: apply() stages and read_at() renames."""
    with databases(sc, 1) as (db,):
        sc.run(db, "CREATE TYPE mood AS ENUM ('a')", "CREATE TABLE t (id int, v text)",
               "INSERT INTO t VALUES (1, 'x'), (2, 'x')")
        with sc.connect(db) as conn:
            # A CREATE INDEX CONCURRENTLY that fails after the transaction committed.
            out = apply(conn, [Stmt("CREATE TABLE public.ok (x int)"), Stmt(
                "CREATE UNIQUE INDEX CONCURRENTLY t_v ON public.t (v)", AFTER_TX)])
            assert (out.ok, out.stage, out.committed) == (False, "after", True)
            assert "committed" in out.recovery() and out.failed.startswith("CREATE UNIQUE")
            # The invalid index it left is gone, so a new merge can build it again.
            assert conn.execute("SELECT to_regclass('public.t_v')").fetchone() == (None,)
            assert conn.execute("SELECT to_regclass('public.ok')").fetchone() != (None,)
            # A failing transaction: rolled back; the ADD VALUE before it stays.
            out = apply(conn, [Stmt("ALTER TYPE public.mood ADD VALUE 'b'", BEFORE_TX),
                               Stmt("CREATE TABLE public.t2 (x int)"),
                               Stmt("SELECT 1 / 0")])
            assert (out.ok, out.stage, out.committed) == (False, "transaction", False)
            assert "rolled back" in out.recovery() and "division by zero" in out.error
            assert conn.execute("SELECT to_regclass('public.t2')").fetchone() == (None,)
            assert conn.execute("SELECT enum_range(NULL::public.mood)::text").fetchone() == (
                "{a,b}",)
        at = Endpoint(sc.cluster.socket_dir, sc.cluster.port, "test")
        renamed = read_at(at, db, [Rename("public", "t", "v", "w")])
        assert "column:public.t.w" in renamed.objects
        assert "column:public.t.v" not in renamed.objects
        assert "column:public.t.v" in sc.catalog(db).objects  # nothing kept
        with pytest.raises(InvalidArgument) as err:
            read_at(at, db, [Rename("public", "t", "nope", "w")])
        assert err.value.field == "renames" and "nope" in str(err.value)
