"""The embedded store: one SQLite file, the default for a single coordinator.

Writes use BEGIN IMMEDIATE, which takes SQLite's write lock up front, so a
placement's read-score-reserve is atomic even against another coordinator
process on the same file. Leadership is the lease in the `leadership` table.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cygnet.coordinator.store.schema import statements
from cygnet.coordinator.store.sql import Row, SqlStore


class _SqliteTx:
    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur = cur

    def q(self, sql: str, *params: object) -> list[Row]:
        return self.cur.execute(sql, params).fetchall()

    def x(self, sql: str, *params: object) -> int:
        return self.cur.execute(sql, params).rowcount

    def many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self.cur.executemany(sql, rows)


class SqliteStore(SqlStore):
    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                     timeout=30)
        self._lock = threading.Lock()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
            self._conn.execute(f"PRAGMA {pragma}")
        with self.transaction() as tx:
            for stmt in statements("INTEGER", "REAL"):
                tx.x(stmt)

    @contextmanager
    def transaction(self, placement: bool = False) -> Iterator[_SqliteTx]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(cur)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()
