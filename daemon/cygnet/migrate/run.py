"""Applies, rolls back and lists migrations on one SQL database, recording each in it.

Synchronous on purpose (the agent runs it in a worker thread). Each migration
runs in its own transaction together with its record, so a failed one leaves
neither its changes nor a record, and the branch is never "dirty" the way a
golang-migrate database can be. A migration's locks are read from pg_locks in
its own transaction just before it commits: Postgres holds a transaction's
table locks until its end, so that is every lock it took (not a sample).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from cygnet.errors import FailedPrecondition
from cygnet.migrate.files import Migration, ordered

Conn = psycopg.Connection[Any]

SCHEMA = "cygnet_migrate"
TABLE = f"{SCHEMA}.schema_migrations"

_CREATE = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {TABLE} (
    version bigint PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_seconds double precision NOT NULL,
    origin text NOT NULL DEFAULT ''
)"""

_LOCKS = """
SELECT l.locktype, coalesce(quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                            CASE WHEN l.relation IS NOT NULL THEN 'oid ' || l.relation END,
                            ''), l.mode
FROM pg_locks l
LEFT JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = pg_backend_pid() AND l.granted
  AND l.locktype NOT IN ('virtualxid', 'transactionid')
  AND coalesce(n.nspname, '') NOT IN ('pg_catalog', 'information_schema', %s)
ORDER BY 2, 3"""


@dataclass(frozen=True)
class Record:
    version: int
    name: str
    checksum: str
    applied_at: float
    duration: float
    origin: str = ""


@dataclass
class Row:
    """One line of `migrate status`."""

    version: int
    name: str
    checksum: str
    state: str  # applied | pending | changed | missing
    applied_at: float = 0.0
    duration: float = 0.0
    origin: str = ""


@dataclass
class Run:
    version: int
    name: str
    direction: str
    seconds: float
    locks: list[tuple[str, str, str]] = field(default_factory=list)


def records(conn: Conn) -> dict[int, Record]:
    """The applied migrations (none when the table does not exist yet)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(f"SELECT version, name, checksum, extract(epoch FROM applied_at), "
                        f"duration_seconds, origin FROM {TABLE} ORDER BY version").fetchall()
    return {r[0]: Record(r[0], r[1], r[2], float(r[3]), r[4], r[5]) for r in rows}


def status(conn: Conn, files: list[Migration]) -> list[Row]:
    done = records(conn)
    by_version = {m.version: m for m in ordered(files)}
    out = []
    for v in sorted(set(done) | set(by_version)):
        rec, m = done.get(v), by_version.get(v)
        if rec is None:
            assert m is not None
            out.append(Row(v, m.name, m.checksum, "pending"))
            continue
        state = "missing" if m is None else ("changed" if m.checksum != rec.checksum
                                              else "applied")
        out.append(Row(v, rec.name, rec.checksum, state, rec.applied_at, rec.duration,
                       rec.origin))
    return out


def verify(done: dict[int, Record], files: list[Migration]) -> None:
    """An applied migration whose file changed since is an error naming the file."""
    for m in files:
        rec = done.get(m.version)
        if rec is not None and rec.checksum != m.checksum:
            raise FailedPrecondition(
                f"{m.label} was applied with checksum {rec.checksum[:12]}... but the file now "
                f"has {m.checksum[:12]}...: an applied migration must not change; write a new "
                "one")


def pending(conn: Conn, files: list[Migration]) -> list[Migration]:
    files = ordered(files)
    done = records(conn)
    verify(done, files)
    todo = [m for m in files if m.version not in done]
    newest = max(done, default=0)
    for m in todo:
        if m.version < newest:
            raise FailedPrecondition(
                f"{m.label} is older than the newest applied migration ({newest}) but was "
                "never applied here: give it a version above the newest")
    return todo


def apply(conn: Conn, files: list[Migration]) -> list[Run]:
    """Applies the pending migrations in order; stops at the first that fails."""
    conn.autocommit = True
    todo = pending(conn, files)
    conn.execute(_CREATE)
    runs: list[Run] = []
    for m in todo:
        runs.append(_step(conn, m, m.up, "up", runs))
    return runs


def rollback(conn: Conn, files: list[Migration], to_version: int) -> list[Run]:
    """Runs the down files of the applied migrations above `to_version`, newest first."""
    conn.autocommit = True
    done = records(conn)
    by_version = {m.version: m for m in ordered(files)}
    verify(done, list(by_version.values()))
    undo = sorted((v for v in done if v > to_version), reverse=True)
    for v in undo:  # all checked before any runs
        m = by_version.get(v)
        if m is None or not m.down.strip():
            name = m.label.replace(".up.", ".down.") if m else f"{v}_{done[v].name}.down.sql"
            raise FailedPrecondition(f"cannot roll back {v} ({done[v].name}): {name} is "
                                     "missing from the directory; nothing was rolled back")
    runs: list[Run] = []
    for v in undo:
        runs.append(_step(conn, by_version[v], by_version[v].down, "down", runs))
    return runs


def _step(conn: Conn, m: Migration, sql: str, direction: str, before: list[Run]) -> Run:
    started = time.monotonic()
    try:
        with conn.transaction():
            conn.execute(sql.encode())  # no parameters: the whole file, several statements
            locks = [(r[0], r[1], r[2]) for r in conn.execute(_LOCKS, (SCHEMA,)).fetchall()]
            seconds = time.monotonic() - started
            if direction == "up":
                conn.execute(f"INSERT INTO {TABLE} (version, name, checksum, duration_seconds)"
                             " VALUES (%s, %s, %s, %s)", (m.version, m.name, m.checksum,
                                                           seconds))
            else:
                conn.execute(f"DELETE FROM {TABLE} WHERE version = %s", (m.version,))
    except psycopg.Error as exc:
        msg = (exc.diag.message_primary or str(exc)).strip()
        what = m.label if direction == "up" else m.label.replace(".up.", ".down.")
        raise FailedPrecondition(
            f"{what} failed: {msg}; it was rolled back (no record written); "
            f"{len(before)} migration(s) before it in this run stay done") from exc
    return Run(m.version, m.name, direction, seconds, locks)


def carry(source: Conn, target: Conn, origin: str) -> int:
    """Copies the source's records the target lacks (after a schema merge); returns how many.

    The merge brought the schema those migrations made, so the target records
    them too, marked with where they came from."""
    theirs = records(source)
    target.autocommit = True
    target.execute(_CREATE)
    ours = records(target)
    new = [r for v, r in theirs.items() if v not in ours]
    with target.transaction():
        for r in new:
            target.execute(f"INSERT INTO {TABLE} (version, name, checksum, applied_at, "
                           "duration_seconds, origin) VALUES (%s, %s, %s, to_timestamp(%s), "
                           "%s, %s)", (r.version, r.name, r.checksum, r.applied_at, r.duration,
                                       origin))
    return len(new)
