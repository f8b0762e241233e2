"""Masks one SQL database in place and removes every copy of the old values inside it.

Runs on a private server nobody else is connected to (agent/masked.py). In
order: the rules' UPDATEs in one transaction (ordinary triggers off, so an
audit trigger cannot copy old values elsewhere; statement logging off, the
HMAC key is a parameter); materialized views refreshed (they may hold copies);
each masked table rewritten with VACUUM FULL (no dead tuple versions, indexes
and TOAST rebuilt); the masked columns' rows of pg_statistic deleted, the
tables analysed again and pg_statistic(_ext_data) rewritten; pg_stat_statements
reset. WAL, the server log and stats files are the caller's (they are
cluster-wide).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from cygnet.masking.rules import Rule
from cygnet.masking.sql import Key, check, updates
from cygnet.schema.read import read_catalog

Conn = psycopg.Connection[Any]

_QUIET = ("SET LOCAL log_statement = 'none'", "SET LOCAL log_min_duration_statement = -1",
          "SET LOCAL log_min_error_statement = 'panic'",
          "SET LOCAL session_replication_role = replica")


def validate(conn: Conn, rules: list[Rule], dbname: str) -> None:
    """Raises InvalidArgument naming the first rule that does not fit the live schema."""
    check(rules, read_catalog(conn), dbname)


def scrub(conn: Conn, rules: list[Rule], dbname: str, key: Key) -> int:
    """Masks the database `conn` is connected to; returns how many tables were masked."""
    conn.autocommit = True
    columns = check(rules, read_catalog(conn), dbname)
    stmts = updates(rules, columns)
    with conn.transaction():
        for q in _QUIET:
            conn.execute(q)
        for _, stmt in stmts:
            conn.execute(stmt, {"ipad": key.ipad, "opad": key.opad})
    for (name,) in conn.execute("SELECT format('%I.%I', schemaname, matviewname) "
                                "FROM pg_matviews WHERE ispopulated ORDER BY 1").fetchall():
        conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.SQL(name)))
    tables = [t for t, _ in stmts]
    for t in tables:
        conn.execute(sql.SQL("VACUUM (FULL) {}").format(sql.SQL(t)))
    for c in columns.values():
        conn.execute("DELETE FROM pg_statistic WHERE starelid = %s::regclass AND staattnum = "
                     "(SELECT attnum FROM pg_attribute WHERE attrelid = %s::regclass "
                     "AND attname = %s)", (c.table_sql, c.table_sql, c.name))
    for t in tables:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(t)))
    conn.execute("VACUUM (FULL) pg_catalog.pg_statistic")
    conn.execute("VACUUM (FULL) pg_catalog.pg_statistic_ext_data")
    found = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
                         ).fetchone()
    if found:
        conn.execute("SELECT pg_stat_statements_reset()")
    return len(tables)


def rewrite_roles(conn: Conn) -> None:
    """pg_authid rewritten after a password change: no old verifier stays behind."""
    conn.autocommit = True
    conn.execute("VACUUM (FULL) pg_catalog.pg_authid")
