"""Host leases in the coordinator's store: renewed by heartbeats, taken over by failovers.

A host's lease is its last committed heartbeat plus `host_lease_ttl`
(docs/ha.md "Host leases"): no table of its own, the heartbeat that renews it
is already written. What the store adds is the `failovers` table: a database
whose primary was taken from a host whose lease had expired. It is written in
the same transaction as the catalog switch, with the host's row locked, so a
heartbeat either lands before it (the lease was alive: no takeover) or after
it (the host learns it lost the database: its fence stays). The row is the
database's latest failover (its promotion may still be pending). The same
transaction records the old host's copy in `lost_copies`, which keeps one row
per host that lost the database, so a second failover does not forget the
first host's copy. A lost copy stays until it rejoins as a replica or is
removed (coordinator/rejoin.py): until then a host that comes back and reports
it can never lift its fence, put it back in the catalog, or lose it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cygnet.coordinator.models import CatalogEntry, HostRecord
from cygnet.coordinator.store import reserve
from cygnet.coordinator.store.sql import SqlStore

_TABLE = """CREATE TABLE IF NOT EXISTS failovers (
  database_id TEXT PRIMARY KEY,
  from_host TEXT NOT NULL,
  to_host TEXT NOT NULL,
  at {real} NOT NULL,
  promoted {int} NOT NULL DEFAULT 0
)"""
_LOST = """CREATE TABLE IF NOT EXISTS lost_copies (
  database_id TEXT NOT NULL,
  host_id TEXT NOT NULL,
  at {real} NOT NULL,
  PRIMARY KEY (database_id, host_id)
)"""
# Stores made before lost_copies: each failover's old host lost its copy.
_LOST_FROM_FAILOVERS = ("INSERT INTO lost_copies (database_id, host_id, at) "
                        "SELECT database_id, from_host, at FROM failovers WHERE true "
                        "ON CONFLICT DO NOTHING")


@dataclass(frozen=True)
class FailoverRecord:
    database_id: str
    from_host: str
    to_host: str
    at: float
    promoted: bool


class HostLeases:
    def __init__(self, store: SqlStore, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        real = "DOUBLE PRECISION" if store.lock_host else "REAL"
        with store.transaction() as tx:
            tx.x(_TABLE.format(real=real, int="INTEGER"))
            tx.x(_LOST.format(real=real))
            tx.x(_LOST_FROM_FAILOVERS)

    def expired(self, host: HostRecord, now: float | None = None) -> bool:
        """True once the host's last committed heartbeat is a full TTL old."""
        return host.last_heartbeat + self.ttl <= (time.time() if now is None else now)

    def still_primary(self, host_id: str, fenced: list[str]) -> list[str]:
        """Of the host's fenced databases, those it still holds: the catalog says so and
        no failover took them from it."""
        out = []
        with self.store.transaction() as tx:
            for db_id in fenced:
                held = tx.q("SELECT 1 FROM databases WHERE id = ? AND host_id = ? AND "
                            "state = 'ready'", db_id, host_id)
                taken = tx.q("SELECT 1 FROM lost_copies WHERE database_id = ? AND "
                             "host_id = ?", db_id, host_id)
                if held and not taken:
                    out.append(db_id)
        return out

    def take_over(self, entry: CatalogEntry, to_host: str, epoch: int,
                  now: float | None = None) -> bool:
        """Moves the database to `to_host` if its host's lease has expired (checked with
        the host's row locked, so no heartbeat slips in between); False otherwise."""
        with self.store.transaction() as tx:
            reserve.fence(tx, epoch)
            rows = tx.q("SELECT last_heartbeat FROM hosts WHERE id = ?" + self.store.lock_host,
                        entry.host_id)
            at = time.time() if now is None else now
            if rows and float(rows[0][0]) + self.ttl > at:
                return False
            if tx.q("SELECT 1 FROM lost_copies WHERE database_id = ? AND host_id = ?",
                    entry.id, entry.host_id):
                # The catalog names a host that already lost this database (its old
                # copy reported itself again): never promote a second primary.
                return False
            if tx.x("UPDATE databases SET host_id = ? WHERE id = ? AND host_id = ?",
                    to_host, entry.id, entry.host_id) != 1:
                return False
            tx.x("DELETE FROM failovers WHERE database_id = ?", entry.id)
            tx.x("INSERT INTO failovers (database_id, from_host, to_host, at) "
                 "VALUES (?, ?, ?, ?)", entry.id, entry.host_id, to_host, at)
            tx.x("INSERT INTO lost_copies (database_id, host_id, at) VALUES (?, ?, ?) "
                 "ON CONFLICT DO NOTHING", entry.id, entry.host_id, at)
            self.store._recount(tx, entry.host_id)
            self.store._recount(tx, to_host)
            return True

    def mark_promoted(self, database_id: str) -> None:
        with self.store.transaction() as tx:
            tx.x("UPDATE failovers SET promoted = 1 WHERE database_id = ?", database_id)

    def pending(self) -> list[FailoverRecord]:
        """Failovers whose new primary was not yet promoted (a round to retry)."""
        return [r for r in self.failovers() if not r.promoted]

    def failovers(self) -> list[FailoverRecord]:
        with self.store.transaction() as tx:
            rows = tx.q("SELECT database_id, from_host, to_host, at, promoted FROM failovers "
                        "ORDER BY at")
        return [FailoverRecord(str(r[0]), str(r[1]), str(r[2]), float(r[3]), bool(r[4]))
                for r in rows]

    def lost_copies(self) -> list[tuple[str, str]]:
        """(database, host) of every old primary that has not rejoined or been removed."""
        with self.store.transaction() as tx:
            rows = tx.q("SELECT database_id, host_id FROM lost_copies ORDER BY at")
        return [(str(r[0]), str(r[1])) for r in rows]

    def lost_on(self, host_id: str) -> set[str]:
        """The databases whose copy on `host_id` a failover made stale."""
        with self.store.transaction() as tx:
            rows = tx.q("SELECT database_id FROM lost_copies WHERE host_id = ?", host_id)
        return {str(r[0]) for r in rows}

    def forget_copy(self, database_id: str, host_id: str) -> None:
        """The old primary on `host_id` rejoined as a replica or was removed."""
        with self.store.transaction() as tx:
            tx.x("DELETE FROM lost_copies WHERE database_id = ? AND host_id = ?",
                 database_id, host_id)
