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
    age: float  # seconds since its last renewal


_COLUMNS = "database_id, from_host, to_host, holder, started_at, renewed_at"


class MoveJournal:
    """Times come from the store's clock (as the leader lease's do), so coordinators
    on machines whose clocks disagree still agree on which move is orphaned. Tests
    pass `now` instead."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store  # the table is in the store's schema (store/schema.py)

    def _now(self, now: float | None) -> tuple[str, tuple[object, ...]]:
        return (self.store.now_sql, ()) if now is None else ("?", (now,))

    def begin(self, database_id: str, from_host: str, to_host: str, holder: str,
              now: float | None = None) -> MoveRecord | None:
        """Records the move; if the database has one in flight already, returns that."""
        at, p = self._now(now)
        with self.store.transaction() as tx:
            if tx.x(f"INSERT INTO moves ({_COLUMNS}) VALUES (?, ?, ?, ?, {at}, {at}) "
                    "ON CONFLICT DO NOTHING", database_id, from_host, to_host, holder,
                    *p, *p) == 1:
                return None
        return self.get(database_id, now)

    def renew(self, database_id: str, holder: str, now: float | None = None) -> bool:
        """False if the row is gone or someone else holds it now."""
        at, p = self._now(now)
        with self.store.transaction() as tx:
            return tx.x(f"UPDATE moves SET renewed_at = {at} WHERE database_id = ? AND "
                        "holder = ?", *p, database_id, holder) == 1

    def take(self, database_id: str, holder: str, older_than: float,
             now: float | None = None) -> bool:
        """Takes a row nobody renewed for `older_than` seconds (recovery); True if taken."""
        at, p = self._now(now)
        with self.store.transaction() as tx:
            return tx.x(f"UPDATE moves SET holder = ?, renewed_at = {at} WHERE database_id = ? "
                        f"AND renewed_at < {at} - ?", holder, *p, database_id, *p,
                        older_than) == 1

    def finish(self, database_id: str, holder: str) -> None:
        with self.store.transaction() as tx:
            tx.x("DELETE FROM moves WHERE database_id = ? AND holder = ?", database_id, holder)

    def get(self, database_id: str, now: float | None = None) -> MoveRecord | None:
        at, p = self._now(now)
        with self.store.transaction() as tx:
            rows = tx.q(f"SELECT {_COLUMNS}, {at} - renewed_at FROM moves "
                        "WHERE database_id = ?", *p, database_id)
        return _record(rows[0]) if rows else None

    def stale(self, older_than: float, now: float | None = None) -> list[MoveRecord]:
        """Rows nobody renewed for `older_than` seconds."""
        at, p = self._now(now)
        with self.store.transaction() as tx:
            rows = tx.q(f"SELECT {_COLUMNS}, {at} - renewed_at FROM moves "
                        f"WHERE renewed_at < {at} - ? ORDER BY started_at", *p, *p,
                        older_than)
        return [_record(r) for r in rows]


def _record(r: tuple[object, ...]) -> MoveRecord:
    return MoveRecord(str(r[0]), str(r[1]), str(r[2]), str(r[3]), float(str(r[4])),
                      float(str(r[5])), float(str(r[6])))
