"""The few SQL statements cygnetd runs, as role postgres over the unix socket (peer auth)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.abc import Params, QueryNoTemplate

from cygnet.errors import Aborted
from cygnet.postgres.layout import SUPERUSER_ROLE

CONNECT_TIMEOUT = 10


async def connect(
    socket_dir: Path, port: int, dbname: str = "postgres"
) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection as the superuser; Aborted if the server does not answer."""
    try:
        return await psycopg.AsyncConnection.connect(
            host=str(socket_dir),
            port=port,
            user=SUPERUSER_ROLE,
            dbname=dbname,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="cygnetd",
        )
    except psycopg.OperationalError as exc:
        raise Aborted(f"cannot connect to postgres on port {port}: {exc}") from exc


async def query_one(
    socket_dir: Path,
    port: int,
    query: QueryNoTemplate,
    params: Params | None = None,
    dbname: str = "postgres",
) -> tuple[Any, ...] | None:
    """Runs `query` on a fresh connection; returns its first row (None if no rows)."""
    async with await connect(socket_dir, port, dbname) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchone() if cur.description else None


async def query_all(
    socket_dir: Path,
    port: int,
    query: QueryNoTemplate,
    params: Params | None = None,
    dbname: str = "postgres",
) -> list[tuple[Any, ...]]:
    """Runs `query` on a fresh connection; returns all rows."""
    async with await connect(socket_dir, port, dbname) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def checkpoint_for_snapshot(socket_dir: Path, port: int) -> int:
    """CHECKPOINT, then count subscriptions, on one connection; returns the count.

    The checkpoint means a snapshot taken next needs only a short crash
    recovery; the count says whether a clone must have its subscriptions
    disarmed (pg_subscription is a shared catalog). Both on one connection:
    this is on the latency path of every new branch.
    """
    async with await connect(socket_dir, port) as conn:
        await conn.execute("CHECKPOINT")
        cur = await conn.execute("SELECT count(*) FROM pg_subscription")
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def end_other_sessions(conn: psycopg.AsyncConnection[Any], wait: float = 2.0) -> int:
    """Ends every client session but `conn`'s; returns how many ended.

    Sessions are asked to end until none is left (one may have connected
    meanwhile), for `wait` seconds at most.
    """
    ended: set[int] = set()
    deadline = time.monotonic() + wait
    while True:
        cur = await conn.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        left = await cur.fetchall()  # still there, exiting ones included
        ended |= {pid for pid, asked in left if asked}
        if not left or time.monotonic() >= deadline:
            return len(ended)
        await asyncio.sleep(0.005)


async def set_password(socket_dir: Path, port: int, role: str, password: str, *,
                       local_commit: bool = False) -> None:
    """Sets `role`'s password; creates the role (LOGIN) if it does not exist.

    The password is SCRAM-hashed client side (libpq), so not even the server
    log on a failing statement can show the cleartext; statement logging is
    also switched off for this session. `local_commit`: the change does not
    wait for a synchronous standby (one being set up cannot confirm it yet).
    """
    async with await connect(socket_dir, port) as conn:
        if local_commit:
            await conn.execute("SET synchronous_commit = local")
        verifier = conn.pgconn.encrypt_password(
            password.encode("utf-8"), role.encode("utf-8"), b"scram-sha-256"
        ).decode("ascii")
        await conn.execute("SET log_statement = 'none'")
        await conn.execute("SET log_min_error_statement = 'panic'")
        exists = await (
            await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        ).fetchone()
        if exists:
            stmt = sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}")
        else:
            stmt = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}")
        await conn.execute(stmt.format(sql.Identifier(role), sql.Literal(verifier)))


def connection_uri(host: str, port: int, user: str, password: str, dbname: str) -> str:
    """postgresql://user:password@host:port/dbname, every part percent-encoded.

    An IPv6 host is bracketed; a socket directory (absolute path) goes into
    the ?host= parameter, as libpq expects.
    """
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
    path = quote(dbname, safe="")
    if host.startswith("/"):
        return f"postgresql://{userinfo}@:{port}/{path}?host={quote(host, safe='')}"
    netloc_host = f"[{host}]" if ":" in host else quote(host, safe="")
    return f"postgresql://{userinfo}@{netloc_host}:{port}/{path}"
