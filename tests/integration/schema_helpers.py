"""One Postgres test cluster with many small databases, for schema diff tests.

The oracle: after the diff's script runs on A, `pg_dump --schema-only` of A
equals B's, normalised for order (statements sorted, the lines inside a
CREATE TABLE sorted: Postgres cannot reorder columns, so ALTER TABLE ADD
COLUMN appends where B may have the column in the middle).
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from cygnet.schema.model import Catalog
from cygnet.schema.read import read_catalog
from tests.integration.pg_helpers import Cluster


@dataclass
class SchemaCluster:
    cluster: Cluster

    def connect(self, dbname: str = "postgres", autocommit: bool = True
                ) -> psycopg.Connection[Any]:
        return psycopg.connect(host=str(self.cluster.socket_dir), port=self.cluster.port,
                               user="postgres", dbname=dbname, autocommit=autocommit)

    def new_db(self, prefix: str = "d", template: str = "template1") -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        with self.connect() as c:
            c.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    def make_fast(self) -> None:
        """No fsync: a test cluster's durability does not matter, its speed does."""
        with self.connect() as c:
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                c.execute(f"ALTER SYSTEM SET {name} = off")
            c.execute("SELECT pg_reload_conf()")

    def drop_db(self, name: str) -> None:
        with self.connect() as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def run(self, dbname: str, *statements: str) -> None:
        with self.connect(dbname) as c:
            for sql in statements:
                c.execute(sql)

    def run_script(self, dbname: str, script: str) -> None:
        """A whole script (BEGIN/COMMIT included), run by psql as a user would run it."""
        done = subprocess.run(
            [str(self.cluster.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.cluster.socket_dir), "-p", str(self.cluster.port), "-U", "postgres",
             "-d", dbname, "-f", "-"], input=script, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"psql failed: {done.stderr}\n{script}")

    def catalog(self, dbname: str) -> Catalog:
        with self.connect(dbname) as c:
            return read_catalog(c)

    def dump(self, dbname: str) -> list[str]:
        out = subprocess.run(
            [str(self.cluster.bindir / "pg_dump"), "--schema-only", "--no-owner",
             "-h", str(self.cluster.socket_dir), "-p", str(self.cluster.port), "-U", "postgres",
             dbname], capture_output=True, text=True, check=True, timeout=60).stdout
        return normalise(out)


@contextmanager
def databases(sc: SchemaCluster, n: int = 2, *, drop: bool = True, template: str = "template1"
              ) -> Iterator[list[str]]:
    """`n` new databases; dropped afterwards unless `drop` is False (a DROP DATABASE
    costs a checkpoint; a test cluster is removed whole at the end anyway)."""
    names = [sc.new_db(template=template) for _ in range(n)]
    try:
        yield names
    finally:
        for name in names if drop else []:
            sc.drop_db(name)


_NOISE = re.compile(r"^(--|SET |SELECT pg_catalog\.set_config|\\restrict|\\unrestrict)")


def normalise(dump: str) -> list[str]:
    """pg_dump's statements, sorted; inside CREATE TABLE (...) the lines sorted too."""
    lines = [ln for ln in dump.splitlines() if ln.strip() and not _NOISE.match(ln)]
    statements, current = [], []
    for line in lines:
        current.append(line)
        if line.rstrip().endswith(";") and not _in_body(current):
            statements.append(_sorted_table("\n".join(current)))
            current = []
    if current:
        statements.append("\n".join(current))
    return sorted(statements)


def _in_body(lines: list[str]) -> bool:
    """Inside a dollar-quoted function body (an odd number of $-quote marks so far)."""
    text = "\n".join(lines)
    return len(re.findall(r"\$[A-Za-z_]*\$", text)) % 2 == 1


def _sorted_table(statement: str) -> str:
    if not statement.startswith("CREATE TABLE") and not statement.startswith(
            "CREATE UNLOGGED TABLE"):
        return statement
    lines = statement.split("\n")
    if len(lines) < 3 or not lines[0].endswith("("):
        return statement
    end = next((i for i in range(len(lines) - 1, 0, -1) if lines[i].startswith(")")), None)
    if end is None:
        return statement
    body = sorted(ln.strip().rstrip(",") for ln in lines[1:end])
    return "\n".join([lines[0], *body, *lines[end:]])
