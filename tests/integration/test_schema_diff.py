"""Schema diff against the oracle: after the diff's DDL runs on A, pg_dump of A equals B's."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

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
        s.run("postgres", "CREATE ROLE cyg_reader", "CREATE ROLE cyg_writer")
        yield s
    finally:
        env.cleanup()
        shutil.rmtree(env.base, ignore_errors=True)
        shutil.rmtree(env.socket_base, ignore_errors=True)


def converge(sc: SchemaCluster, a: str, b: str) -> str:
    """Applies diff(a -> b) to a; returns the script. Asserts the oracle."""
    p = plan(sc.catalog(a), sc.catalog(b))
    script = p.script()
    sc.run_script(a, script)
    dump_a, dump_b = sc.dump(a), sc.dump(b)
    only_a = [s for s in dump_a if s not in dump_b]
    only_b = [s for s in dump_b if s not in dump_a]
    assert (only_a, only_b) == ([], []), script
    again = plan(sc.catalog(a), sc.catalog(b))
    assert again.changes == [], [c.key for c in again.changes]
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
