"""Masked branches: the masking SQL on a plain cluster, then whole masked branches through
cygnetd (real zfs-fuse clones, real Postgres), scanned file by file for a sentinel."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from cygnet.agent import layout as L
from cygnet.agent.masked import fresh_wal, remove_traces
from cygnet.agent.schema_service import Endpoint, connect
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.errors import InvalidArgument
from cygnet.masking import rules as R
from cygnet.masking.scrub import rewrite_roles, scrub, validate
from cygnet.masking.sql import Key
from tests.conftest import unique
from tests.harness import Daemon, query
from tests.integration import pg_helpers
from tests.integration.pg_helpers import PgEnv, make_base
from tests.integration.schema_helpers import SchemaCluster
from tests.integration.test_cli_support import CONFLICT, INVALID, cygnet

pytestmark = pytest.mark.integration
pg_template = pg_helpers.pg_template
pg_env = pg_helpers.pg_env

SENTINEL = "zq-sentinel-7f3a9c"
RULES = """
[databases.postgres]
"users.name" = "name"
"users.email" = "email"
"public.users.phone" = "phone"
"users.ssn" = "hash"
"users.note" = "null"
"users.country" = { mask = "constant", value = "XX" }
"users.card" = { mask = "partial", last = 4 }
"orders.email" = "email"
"users.id" = "keep"
"""
SCHEMA = """
CREATE TABLE users (id int PRIMARY KEY, name text, email text UNIQUE, phone varchar(20),
                    ssn text, note text, country char(2), card text);
CREATE INDEX users_name ON users (name);
CREATE TABLE orders (id int PRIMARY KEY, email text);
INSERT INTO users SELECT g, 'name' || g, 'u' || g || '@corp.com', '+44 20 7946 ' || g,
                         'ssn-' || g, 'note ' || g, 'GB', '4111111111111' || lpad(g::text, 3, '0')
FROM generate_series(1, 300) g;
INSERT INTO orders SELECT g, 'u' || (g % 300 + 1) || '@corp.com' FROM generate_series(1, 600) g;
"""


def sentinel_sql() -> str:
    s = SENTINEL
    return (f"UPDATE users SET name = '{s}', email = '{s}@x.io', ssn = '{s}', note = '{s}', "
            f"card = '{s}' WHERE id = 7; UPDATE orders SET email = '{s}@x.io' WHERE id = 6;"
            "ANALYZE users; ANALYZE orders")


@pytest.fixture(scope="module")
def sc(pg_template: tuple[Path, Path]) -> Iterator[SchemaCluster]:
    template, bindir = pg_template
    env = PgEnv(make_base("/var/tmp/cygnet-pgtest-"), make_base("/tmp/cygs-"), template, bindir)
    try:
        cluster = env.new_cluster("masking")
        cluster.start()
        s = SchemaCluster(cluster)
        s.make_fast()
        yield s
    finally:
        env.cleanup()
        shutil.rmtree(env.base, ignore_errors=True)
        shutil.rmtree(env.socket_base, ignore_errors=True)


def test_masks_are_keyed_deterministic_and_leave_no_statistics(sc: SchemaCluster) -> None:
    dbname = sc.new_db("mask")
    sc.run_script(dbname, SCHEMA + sentinel_sql())
    secret = b"k" * 32
    with sc.connect(dbname) as conn:
        before = conn.execute("SELECT count(*) FROM orders JOIN users USING (email)").fetchone()
        scrub(conn, R.parse(RULES.replace("postgres", dbname)), dbname, Key.of(secret))
        rows = conn.execute("SELECT id, name, email, phone, ssn, note, country, card "
                            "FROM users WHERE id IN (1, 7) ORDER BY id").fetchall()
        joined = conn.execute("SELECT count(*) FROM orders o JOIN users u USING (email)"
                              ).fetchone()
        stats = conn.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'users' "
                             "AND attname = 'email'").fetchone()
        found = conn.execute("SELECT count(*) FROM pg_stats WHERE most_common_vals::text "
                             "LIKE %s OR histogram_bounds::text LIKE %s",
                             (f"%{SENTINEL}%", f"%{SENTINEL}%")).fetchone()
    one = rows[0]
    assert one[4] == hmac.new(secret, b"ssn-1", hashlib.sha256).hexdigest()  # a keyed HMAC
    assert one[2].startswith("user-") and one[2].endswith("@example.com")
    assert one[3].startswith("+1-555-") and len(one[3]) == 14
    first, last = one[1].split(" ", 1)
    assert first and last and one[1] != "name1"
    assert one[5] is None and one[6] == "XX" and one[7] == "*" * 12 + "1001"
    assert joined == before == (599,)  # one email masks to one fake in both tables
    assert SENTINEL not in repr(rows)
    assert stats == (1,) and found == (0,)  # analysed again, without the old values


def test_rules_name_what_is_wrong(sc: SchemaCluster) -> None:
    with pytest.raises(InvalidArgument, match="not one of"):
        R.parse('[databases.postgres]\n"users.email" = "scramble"')
    with pytest.raises(InvalidArgument, match=r"TABLE\.COLUMN"):
        R.parse('[databases.postgres]\n"email" = "hash"')
    with pytest.raises(InvalidArgument, match="constant needs value"):
        R.parse('[databases.postgres]\n"users.email" = { mask = "constant" }')
    dbname = sc.new_db("rules")
    sc.run(dbname, "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, age int)")
    cases = {'"users.emial" = "email"': "has no column 'emial'",
             '"clients.email" = "email"': "table public.clients does not exist",
             '"users.email" = "null"': "NOT NULL",
             '"users.age" = "hash"': "needs a text column"}
    with sc.connect(dbname) as conn:
        for line, message in cases.items():
            rules = R.parse(f"[databases.{dbname}]\n{line}")
            with pytest.raises(InvalidArgument, match=message):
                validate(conn, rules, dbname)


def test_masked_copy_holds_no_sentinel_on_disk(pg_env: PgEnv) -> None:
    """The build's steps after the SQL (clean stop, pg_resetwal, traces removed) on a
    plain cluster: every file, WAL and log included, is free of the sentinel."""
    cluster = pg_env.new_cluster("sentinel")
    cluster.start()
    at = Endpoint(cluster.socket_dir, cluster.port, "test cluster")
    with connect(at, "postgres") as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")  # the log holds it too
        conn.execute("SELECT pg_reload_conf()")
    with connect(at, "postgres") as conn:
        conn.execute(SCHEMA + sentinel_sql())
        conn.execute("CHECKPOINT")
    assert files_holding(cluster.layout.mount, SENTINEL.encode())  # the scan can find it
    with connect(at, "postgres") as conn:
        scrub(conn, R.parse(RULES), "postgres", Key.of(b"s" * 32))
        rewrite_roles(conn)
    cluster.stop("fast")
    asyncio.run(fresh_wal(cluster.bindir, cluster.pgdata))
    remove_traces(cluster.layout)
    assert files_holding(cluster.layout.mount, SENTINEL.encode()) == []
    cluster.start()  # and it still starts
    with connect(at, "postgres") as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (300,)


# Through cygnetd: a database with personal data, its rules, masked branches.


def files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            found.append(str(path.relative_to(root)))
    return found


@pytest.fixture(scope="module")
def shop(daemon: Daemon) -> dict[str, Any]:
    name = unique("masked")
    with daemon.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="nano"),
                              timeout=120)
    query(db.connection, SCHEMA)
    query(db.connection, sentinel_sql())
    return {"name": name, "main": db.connection}


def test_masked_branch_holds_no_sentinel_and_has_its_own_password(
        daemon: Daemon, shop: dict[str, Any], tmp_path: Path) -> None:
    name, main = shop["name"], shop["main"]
    no_rules = cygnet(daemon, "branch", "create", f"{name}/early", "--masked", expect=None)
    assert no_rules.code == CONFLICT and "no masking rules" in no_rules.err
    bad = tmp_path / "bad.toml"
    bad.write_text('[databases.postgres]\n"users.emial" = "email"\n')
    refused = cygnet(daemon, "mask", "set", name, str(bad), expect=None)
    assert refused.code == INVALID and "emial" in refused.err, refused
    good = tmp_path / "rules.toml"
    good.write_text(RULES)
    cygnet(daemon, "mask", "set", name, str(good))
    assert cygnet(daemon, "mask", "show", name).out == RULES

    first = cygnet(daemon, "branch", "create", f"{name}/m1", "--masked", "--json").json()
    assert first["built"] is True and first["masked_snapshot"].endswith("@masked")
    conn = first["connection"]
    masked_uri = conn["uri"]
    with psycopg.connect(masked_uri, connect_timeout=10) as c:
        assert c.execute("SELECT count(*) FROM users WHERE name LIKE 'name%'").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM orders JOIN users USING (email)"
                         ).fetchone() == (599,)
    # The sentinel is nowhere in the masked branch's files: data, WAL, logs.
    mount = L.mountpoint(daemon.mount_root, first["masked_snapshot"].split("@")[0])
    b = first["branch"]
    branch_mount = L.mountpoint(daemon.mount_root,
                                L.branch(daemon.pool.name, b["database_id"], b["id"]))
    assert (branch_mount / "pgdata" / "pg_wal").is_dir()
    assert files_holding(branch_mount, SENTINEL.encode()) == []
    assert files_holding(mount, SENTINEL.encode()) == []
    # ... while main still has it (the scan can find it).
    assert query(main, f"SELECT count(*) FROM users WHERE name = '{SENTINEL}'") == [(1,)]

    # Its own password: it does not open main, and main's does not open it.
    masked_password = conn["password"]
    assert masked_password != main.password
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        query(main, "SELECT 1", password=masked_password)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(masked_uri.replace(masked_password, main.password),
                        connect_timeout=10).close()

    # A reset to the parent would bring the unmasked data back: refused.
    with daemon.stub() as s, pytest.raises(grpc.RpcError) as refused_reset:
        s.ResetBranch(pb.ResetBranchRequest(branch=pb.BranchRef(database=name, name="m1")),
                      timeout=60)
    assert refused_reset.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "masked" in (refused_reset.value.details() or "")

    second = cygnet(daemon, "branch", "create", f"{name}/m2", "--masked", "--json").json()
    assert second["built"] is False
    assert second["masked_snapshot"] == first["masked_snapshot"]
    cygnet(daemon, "branch", "rm", f"{name}/m2", "--yes")
    cygnet(daemon, "branch", "rm", f"{name}/m1", "--yes")


def test_deleting_the_database_forgets_its_masking_key_and_rules(
        daemon: Daemon, shop: dict[str, Any]) -> None:
    """Runs last: the module's database goes."""
    with daemon.stub() as s:
        db = s.GetDatabase(pb.GetDatabaseRequest(database=shop["name"]))
    kept = daemon.base / "state" / "masking" / db.id
    assert (kept / "key").is_file() and (kept / "rules.toml").is_file()
    cygnet(daemon, "db", "rm", shop["name"], "--yes")
    assert not kept.exists()
