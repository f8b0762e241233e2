"""The shared store: PostgreSQL through psycopg, for several coordinators.

Every coordinator serves the API. The store's placement transaction (the
followers' path) serializes on a transaction-level advisory lock; every
reservation is a conditional update of its host row, so coordinators sharing
the database never overcommit a host. Leadership is the lease in the
`leadership` table (store/reserve.py, coordinator/leadership.py), not a
session lock: a paused process keeps its session, and would keep such a lock.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from cygnet.coordinator.store.schema import TABLES, statements
from cygnet.coordinator.store.sql import Row, SqlStore
from cygnet.errors import Unavailable

log = logging.getLogger("cygnet.coordinator.store")

# Advisory lock keys: arbitrary, fixed, and shared by every coordinator.
PLACEMENT_LOCK = 0x6379676E01
SCHEMA_LOCK = 0x6379676E03


IDLE_TX_MS = 3000


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class _PgTx:
    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur

    def q(self, sql: str, *params: object) -> list[Row]:
        return self.cur.execute(_pg(sql), params).fetchall()

    def x(self, sql: str, *params: object) -> int:
        return self.cur.execute(_pg(sql), params).rowcount

    def many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            self.cur.executemany(_pg(sql), rows)


class PostgresStore(SqlStore):
    integrity_errors = (psycopg.errors.IntegrityError,)
    greatest = "GREATEST"
    now_sql = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
    lock_host = " FOR UPDATE"

    def __init__(self, dsn: str, pool_size: int = 4) -> None:
        self.dsn = dsn
        self._pool: queue.Queue[psycopg.Connection[Any]] = queue.Queue()
        for _ in range(pool_size):
            self._pool.put(self._connect())
        with self.transaction() as tx:
            # Even CREATE INDEX IF NOT EXISTS locks its table, and could deadlock with
            # the batches of coordinators already serving: only a new schema is created.
            found = tx.q("SELECT " + ", ".join(f"to_regclass('{t}')" for t in TABLES))
            if any(x is None for x in found[0]):
                # CREATE ... IF NOT EXISTS still races between coordinators starting together.
                tx.q("SELECT pg_advisory_xact_lock(?)", SCHEMA_LOCK)
                for stmt in statements("BIGINT", "DOUBLE PRECISION"):
                    tx.x(stmt)

    def _take(self) -> psycopg.Connection[Any]:
        conn = self._pool.get()
        if conn.closed or conn.broken:
            try:
                conn = self._connect()
            except psycopg.OperationalError as exc:
                self._pool.put(conn)
                raise Unavailable(f"the store is unreachable: {_first_line(exc)}") from None
        return conn

    def _connect(self) -> psycopg.Connection[Any]:
        # A paused (SIGSTOPped) coordinator must not hold row locks forever: the
        # server ends its session when it sits idle inside a transaction.
        return psycopg.connect(self.dsn, connect_timeout=10,
                               options=f"-c idle_in_transaction_session_timeout={IDLE_TX_MS}")

    @contextmanager
    def transaction(self, placement: bool = False) -> Iterator[_PgTx]:
        conn = self._take()
        try:
            with conn.transaction(), conn.cursor() as cur:
                if placement:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (PLACEMENT_LOCK,))
                yield _PgTx(cur)
        except psycopg.OperationalError as exc:
            # The transaction is rolled back (or died with its connection): nothing half-written.
            raise Unavailable(f"the store is unreachable: {_first_line(exc)}") from None
        finally:
            self._pool.put(conn)

    def close(self) -> None:
        while not self._pool.empty():
            self._pool.get().close()
