"""Moves in flight, in the coordinator's store (docs/ha.md, "Moving databases").

A row is written before a move asks anything of its hosts and removed once
its source has been told how the move ended (EndMove). The coordinator that
runs the move renews it every few seconds. A row that stops being renewed
belongs to a coordinator that died, or to a move whose last call failed: the
leader finishes it from the catalog (coordinator/moves.py, `Moves.recover`).
The row is also the lock that allows one move per database across every
coordinator of the fleet, where an in-memory set covered only one. And while
it exists, host reports never change the database's host in the catalog
(store/sql.py, `replace_host_catalog`): both hosts hold a copy meanwhile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cygnet.coordinator.store.sql import SqlStore


@dataclass(frozen=True)
class MoveRecord:
    database_id: str
    from_host: str
    to_host: str
    holder: str
    started_at: float
    renewed_at: float


class MoveJournal:
    def __init__(self, store: SqlStore) -> None:
        self.store = store  # the table is in the store's schema (store/schema.py)

    def begin(self, database_id: str, from_host: str, to_host: str, holder: str,
              now: float | None = None) -> MoveRecord | None:
        """Records the move; if the database has one in flight already, returns that."""
        at = time.time() if now is None else now
        with self.store.transaction() as tx:
            if tx.x("INSERT INTO moves (database_id, from_host, to_host, holder, started_at, "
                    "renewed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    database_id, from_host, to_host, holder, at, at) == 1:
                return None
        return self.get(database_id)

    def renew(self, database_id: str, holder: str, now: float | None = None) -> bool:
        """False if the row is gone or someone else holds it now."""
        with self.store.transaction() as tx:
            return tx.x("UPDATE moves SET renewed_at = ? WHERE database_id = ? AND holder = ?",
                        time.time() if now is None else now, database_id, holder) == 1

    def take(self, database_id: str, holder: str, stale_before: float,
             now: float | None = None) -> bool:
        """Takes a row nobody renewed since `stale_before` (recovery); True if taken."""
        with self.store.transaction() as tx:
            return tx.x("UPDATE moves SET holder = ?, renewed_at = ? WHERE database_id = ? "
                        "AND renewed_at < ?", holder, time.time() if now is None else now,
                        database_id, stale_before) == 1

    def finish(self, database_id: str, holder: str) -> None:
        with self.store.transaction() as tx:
            tx.x("DELETE FROM moves WHERE database_id = ? AND holder = ?", database_id, holder)

    def get(self, database_id: str) -> MoveRecord | None:
        with self.store.transaction() as tx:
            rows = tx.q("SELECT database_id, from_host, to_host, holder, started_at, "
                        "renewed_at FROM moves WHERE database_id = ?", database_id)
        return _record(rows[0]) if rows else None

    def stale(self, before: float) -> list[MoveRecord]:
        with self.store.transaction() as tx:
            rows = tx.q("SELECT database_id, from_host, to_host, holder, started_at, "
                        "renewed_at FROM moves WHERE renewed_at < ? ORDER BY started_at",
                        before)
        return [_record(r) for r in rows]


def _record(r: tuple[object, ...]) -> MoveRecord:
    return MoveRecord(str(r[0]), str(r[1]), str(r[2]), str(r[3]), float(str(r[4])),
                      float(str(r[5])))
