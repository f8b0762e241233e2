"""The coordinator's state as SQL, shared by the SQLite and PostgreSQL stores.

Queries are written with `?` placeholders; a dialect turns them into its own.
Every method is one transaction. Placement reads the candidate hosts, scores
them and writes the reservation in a single transaction that holds the
dialect's placement lock, so two placements never see the same free capacity.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from cygnet.coordinator import scoring
from cygnet.coordinator.models import (
    Capacity,
    CatalogEntry,
    HostRecord,
    PlaceRequest,
    PoolInfo,
    Registration,
)
from cygnet.coordinator.store import reserve
from cygnet.coordinator.store.schema import CANDIDATE_COLUMNS, DB_COLUMNS, HOST_COLUMNS
from cygnet.errors import Aborted, AlreadyExists, NotFound

Row = tuple[Any, ...]


class Tx(Protocol):
    def q(self, sql: str, *params: object) -> list[Row]: ...

    def x(self, sql: str, *params: object) -> int: ...

    def many(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...


def _capacity_values(cap: Capacity) -> tuple[object, ...]:
    pool = cap.best_pool
    return (json.dumps([[p.name, p.size_bytes, p.free_bytes] for p in cap.pools]),
            cap.memory_bytes, cap.running_clusters,
            " " + " ".join(cap.postgres_versions) + " ", cap.database_count,
            pool.free_bytes if pool else 0, pool.size_bytes if pool else 0)


def host_from_row(r: Row) -> HostRecord:
    pools = tuple(PoolInfo(str(n), int(s), int(f)) for n, s, f in json.loads(r[4]))
    cap = Capacity(pools, int(r[5]), int(r[6]), tuple(str(r[7]).split()), int(r[8]))
    return HostRecord(id=r[0], address=r[1], zone=r[2], labels=json.loads(r[3]), capacity=cap,
                      max_clusters=int(r[9]), memory_budget=int(r[10]), drained=bool(r[11]),
                      available=bool(r[12]), last_heartbeat=float(r[13]), version=r[14],
                      db_count=int(r[15]), memory_reserved=int(r[16]), pending_disk=int(r[17]))


def entry_from_row(r: Row) -> CatalogEntry:
    return CatalogEntry(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), r[8], r[9],
                        r[10], float(r[11]), float(r[12]), r[13], int(r[14]))


def entry_values(e: CatalogEntry) -> tuple[object, ...]:
    return (e.id, e.name, e.host_id, e.size_class, e.postgres_version, e.pool, e.memory_bytes,
            e.disk_bytes, e.group, e.state, e.request_id, e.expires_at, e.created_at,
            e.main_branch_id, e.branch_count)


_INSERT_DB = f"INSERT INTO databases ({DB_COLUMNS}) VALUES ({', '.join('?' * 15)})"
_RECOUNT = ("UPDATE hosts SET db_count = (SELECT COUNT(*) FROM databases WHERE host_id = ?), "
            "memory_reserved = (SELECT COALESCE(SUM(memory_bytes), 0) FROM databases "
            "WHERE host_id = ?) WHERE id = ?")


class SqlStore(ABC):
    """Hosts, the database catalog and branch ids, in one SQL database."""

    integrity_errors: tuple[type[Exception], ...] = ()
    # The dialect's n-ary maximum: SQLite's scalar max(), PostgreSQL's GREATEST().
    greatest = "max"
    # The dialect's clock in seconds (leases are timed by the store, not by coordinators).
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"
    # Locks a host row before its counters are recomputed from the catalog, so a
    # concurrent batch's reservation is counted (PostgreSQL; SQLite locks the file).
    lock_host = ""

    @abstractmethod
    def transaction(self, placement: bool = False) -> AbstractContextManager[Tx]:
        """One transaction; `placement` also takes the store-wide placement lock."""

    @abstractmethod
    def close(self) -> None: ...

    # --- hosts ----------------------------------------------------------------

    def register(self, reg: Registration, memory_budget: int, max_clusters: int,
                 now: float) -> HostRecord:
        cap = _capacity_values(reg.capacity)
        with self.transaction() as tx:
            tx.x("INSERT INTO hosts (id, address, zone, labels, pools, memory_bytes, "
                 "running_clusters, versions, database_count, disk_free, disk_size, "
                 "max_clusters, memory_budget, available, last_heartbeat, registered_at, "
                 "version, pending_disk) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, "
                 "?, 0) ON CONFLICT (id) DO UPDATE SET address = excluded.address, "
                 "zone = excluded.zone, labels = excluded.labels, pools = excluded.pools, "
                 "memory_bytes = excluded.memory_bytes, "
                 "running_clusters = excluded.running_clusters, versions = excluded.versions, "
                 "database_count = excluded.database_count, disk_free = excluded.disk_free, "
                 "disk_size = excluded.disk_size, max_clusters = excluded.max_clusters, "
                 "memory_budget = excluded.memory_budget, available = 1, "
                 "last_heartbeat = excluded.last_heartbeat, version = excluded.version, "
                 "pending_disk = 0",
                 reg.host_id, reg.address, reg.zone, json.dumps(reg.labels, sort_keys=True),
                 *cap, max_clusters, memory_budget, now, now, reg.version)
            self._recount(tx, reg.host_id)
            return self._host(tx, reg.host_id)

    def heartbeat(self, host_id: str, cap: Capacity, memory_budget: int, now: float) -> bool:
        """Records the host's capacity; False if the host is unknown (it must register)."""
        with self.transaction() as tx:
            return tx.x("UPDATE hosts SET pools = ?, memory_bytes = ?, running_clusters = ?, "
                        "versions = ?, database_count = ?, disk_free = ?, disk_size = ?, "
                        "memory_budget = ?, available = 1, last_heartbeat = ?, pending_disk = 0 "
                        "WHERE id = ?", *_capacity_values(cap), memory_budget, now,
                        host_id) > 0

    @staticmethod
    def heartbeat_values(cap: Capacity, memory_budget: int, now: float) -> tuple[object, ...]:
        """One heartbeat's values for `heartbeats`."""
        return (*_capacity_values(cap), memory_budget, now)

    def heartbeats(self, beats: Sequence[tuple[str, tuple[object, ...]]]) -> set[str]:
        """Many heartbeats (host id, heartbeat_values) in one statement: the known ids."""
        if not beats:
            return set()
        row = ("(?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), ?, CAST(? AS BIGINT), "
               "CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), "
               "CAST(? AS DOUBLE PRECISION))")
        sql = ("WITH v(id, pools, mem, running, versions, dbs, free, size, budget, at) AS "
               f"(VALUES {', '.join([row] * len(beats))}) "
               "UPDATE hosts SET pools = v.pools, memory_bytes = v.mem, "
               "running_clusters = v.running, versions = v.versions, database_count = v.dbs, "
               "disk_free = v.free, disk_size = v.size, memory_budget = v.budget, "
               "available = 1, last_heartbeat = v.at, pending_disk = 0 "
               "FROM v WHERE hosts.id = v.id RETURNING hosts.id")
        with self.transaction() as tx:
            return {str(r[0]) for r in tx.q(sql, *[p for hid, vals in beats
                                                   for p in (hid, *vals)])}

    def mark_stale(self, cutoff: float, epoch: int = 0) -> list[str]:
        """Marks hosts unavailable whose last heartbeat is older than `cutoff`.

        With `epoch`, only while that epoch leads (reserve.Fenced otherwise): a
        paused old leader that wakes must not mark hosts down on stale clocks."""
        with self.transaction() as tx:
            reserve.fence(tx, epoch)
            rows = tx.q("UPDATE hosts SET available = 0 WHERE available = 1 AND "
                        "last_heartbeat < ? RETURNING id", cutoff)
            return sorted(str(r[0]) for r in rows)

    def set_drained(self, host_id: str, drained: bool) -> HostRecord:
        with self.transaction() as tx:
            if not tx.x("UPDATE hosts SET drained = ? WHERE id = ?", int(drained), host_id):
                raise NotFound(f"host {host_id!r} not found")
            return self._host(tx, host_id)

    def get_host(self, host_id: str) -> HostRecord | None:
        with self.transaction() as tx:
            rows = tx.q(f"SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?", host_id)
            return host_from_row(rows[0]) if rows else None

    def list_hosts(self) -> list[HostRecord]:
        with self.transaction() as tx:
            rows = tx.q(f"SELECT {HOST_COLUMNS} FROM hosts ORDER BY id")
        return [host_from_row(r) for r in rows]

    def _host(self, tx: Tx, host_id: str) -> HostRecord:
        rows = tx.q(f"SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?", host_id)
        if not rows:
            raise NotFound(f"host {host_id!r} not found")
        return host_from_row(rows[0])

    # --- placement --------------------------------------------------------------

    def place(self, req: PlaceRequest) -> scoring.Choice:
        """Chooses a host and writes the reservation, atomically."""
        with self.transaction(placement=True) as tx:
            excluded = self._excluded(tx, req)
            choice = None
            if not excluded and not req.constraints.labels:
                choice = self._ranked_choice(tx, req)
            if choice is None:
                # Label and anti-affinity filters, and the reasons nothing fits, in Python.
                choice = scoring.choose(self._candidates(tx, req), req.demand, req.constraints,
                                        excluded)
            if req.reservation is not None:
                self._reserve(tx, req, choice.host_id)
            return choice

    def _ranked_choice(self, tx: Tx, req: PlaceRequest) -> scoring.Choice | None:
        """The fast path: the database filters and ranks by scoring's formula, in C."""
        g, d = self.greatest, req.demand
        bottleneck = (f"{g}((memory_reserved + ?) * 1.0 / memory_budget, "
                      "1.0 - (disk_free - pending_disk - ?) * 1.0 / disk_size, "
                      f"({g}(db_count, running_clusters) + 1) * 1.0 / max_clusters)")
        sql = (f"SELECT {CANDIDATE_COLUMNS}, COUNT(*) OVER () FROM hosts WHERE available = 1 "
               "AND drained = 0 AND memory_budget > 0 AND memory_reserved + ? <= memory_budget "
               "AND disk_size > 0 AND disk_free - pending_disk - ? >= 0 "
               f"AND {g}(db_count, running_clusters) + 1 <= max_clusters")
        params: list[object] = [d.memory_bytes, d.disk_bytes]
        sql, params = self._filters(sql, params, req)
        rank = f"{bottleneck} - {scoring.headroom_sql()}"
        rows = tx.q(f"{sql} ORDER BY {rank}, db_count, id LIMIT 2", *params,
                    d.memory_bytes, d.disk_bytes)
        if not rows:
            return None
        ranked = [scoring.Candidate(*r[:11]) for r in rows]
        return scoring.describe(ranked[0], ranked[1] if len(ranked) > 1 else None, d,
                                int(rows[0][11]))

    def _filters(self, sql: str, params: list[object], req: PlaceRequest
                 ) -> tuple[str, list[object]]:
        if req.constraints.zone:
            sql += " AND zone = ?"
            params.append(req.constraints.zone)
        if req.version:
            sql += " AND versions LIKE ?"
            params.append(f"% {req.version} %")
        return sql, params

    def _candidates(self, tx: Tx, req: PlaceRequest) -> list[scoring.Candidate]:
        sql = f"SELECT {CANDIDATE_COLUMNS} FROM hosts WHERE available = 1 AND drained = 0"
        sql, params = self._filters(sql, [], req)
        return [scoring.Candidate(*r) for r in tx.q(sql, *params)]

    def _excluded(self, tx: Tx, req: PlaceRequest) -> set[str]:
        hosts: set[str] = set()
        if req.constraints.anti_affinity_group:
            hosts.update(r[0] for r in tx.q("SELECT DISTINCT host_id FROM databases WHERE "
                                            "affinity_group = ?",
                                            req.constraints.anti_affinity_group))
        for ref in req.constraints.avoid_databases:
            hosts.update(r[0] for r in tx.q("SELECT host_id FROM databases WHERE id = ? OR "
                                            "name = ?", ref, ref))
        return hosts

    def _reserve(self, tx: Tx, req: PlaceRequest, host_id: str) -> None:
        assert req.reservation is not None
        entry = req.reservation
        values = list(entry_values(entry))
        values[2] = host_id
        try:
            tx.x(_INSERT_DB, *values)
        except self.integrity_errors as exc:
            raise AlreadyExists(f"database {entry.name!r} exists already") from exc
        # The same conditional write as a batch: the host must still have room.
        item = reserve.Item(tuple(values), host_id, req.demand.memory_bytes,
                            req.demand.disk_bytes)
        if not reserve.add_to_hosts(tx, self.dialect, reserve.totals([item]), conditional=True):
            raise Aborted(f"host {host_id} filled up during placement; retry the request")

    def _recount(self, tx: Tx, host_id: str) -> None:
        if self.lock_host:
            tx.q("SELECT id FROM hosts WHERE id = ?" + self.lock_host, host_id)
        tx.x(_RECOUNT, host_id, host_id, host_id)

    # --- the leader's fast path (index.py, placer.py) ----------------------------------

    @property
    def dialect(self) -> reserve.Dialect:
        return reserve.Dialect(self.greatest, self.now_sql)

    def commit_batch(self, epoch: int, items: Sequence[reserve.Item]) -> list[str]:
        """Writes many reservations in one transaction (reserve.commit_batch)."""
        with self.transaction() as tx:
            return reserve.commit_batch(tx, self.dialect, epoch, items)

    def hold_lease(self, holder: str, epoch: int, ttl: float) -> int:
        with self.transaction() as tx:
            return reserve.hold_lease(tx, self.dialect, holder, epoch, ttl)

    def give_up_lease(self, holder: str, epoch: int) -> None:
        with self.transaction() as tx:
            reserve.give_up_lease(tx, holder, epoch)

    def leader(self) -> tuple[int, str]:
        with self.transaction() as tx:
            return reserve.leader(tx)

    def index_rows(self, host_id: str = "") -> tuple[list[Row], list[Row]]:
        with self.transaction() as tx:
            return reserve.index_rows(tx, host_id)

    # --- catalog ------------------------------------------------------------------

    def confirm(self, reservation_id: str, entry: CatalogEntry) -> None:
        """Turns a reservation into the created database."""
        with self.transaction() as tx:
            tx.x("DELETE FROM databases WHERE id = ?", reservation_id)
            tx.x("DELETE FROM databases WHERE id = ?", entry.id)
            tx.x(_INSERT_DB, *entry_values(entry))
            self._recount(tx, entry.host_id)

    def release(self, entry_id: str) -> None:
        """Drops a reservation or a deleted database, and its branch ids."""
        with self.transaction() as tx:
            rows = tx.q("SELECT host_id FROM databases WHERE id = ?", entry_id)
            tx.x("DELETE FROM databases WHERE id = ?", entry_id)
            tx.x("DELETE FROM branches WHERE database_id = ?", entry_id)
            for (host_id,) in rows:
                self._recount(tx, host_id)

    def expire_reservations(self, now: float, epoch: int = 0) -> int:
        """Drops unused reservations; with `epoch`, only while it leads (as mark_stale)."""
        with self.transaction() as tx:
            reserve.fence(tx, epoch)
            rows = tx.q("SELECT id, host_id FROM databases WHERE state = 'reserved' AND "
                        "expires_at < ?", now)
            for entry_id, host_id in rows:
                tx.x("DELETE FROM databases WHERE id = ?", entry_id)
                self._recount(tx, host_id)
            return len(rows)

    def find_database(self, ref: str) -> CatalogEntry | None:
        """A created database by id or name."""
        with self.transaction() as tx:
            rows = tx.q(f"SELECT {DB_COLUMNS} FROM databases WHERE state = 'ready' AND "
                        "(id = ? OR name = ?) ORDER BY id = ? DESC", ref, ref, ref)
            return entry_from_row(rows[0]) if rows else None

    def get_entry(self, entry_id: str) -> CatalogEntry | None:
        with self.transaction() as tx:
            rows = tx.q(f"SELECT {DB_COLUMNS} FROM databases WHERE id = ?", entry_id)
            return entry_from_row(rows[0]) if rows else None

    def find_request(self, request_id: str) -> CatalogEntry | None:
        with self.transaction() as tx:
            rows = tx.q(f"SELECT {DB_COLUMNS} FROM databases WHERE request_id = ?", request_id)
            return entry_from_row(rows[0]) if rows else None

    def list_databases(self, host_id: str = "") -> list[CatalogEntry]:
        sql = f"SELECT {DB_COLUMNS} FROM databases WHERE state = 'ready'"
        with self.transaction() as tx:
            rows = (tx.q(sql + " AND host_id = ? ORDER BY created_at, id", host_id) if host_id
                    else tx.q(sql + " ORDER BY created_at, id"))
        return [entry_from_row(r) for r in rows]

    def replace_host_catalog(self, host_id: str, entries: list[CatalogEntry],
                             branches: dict[str, str]) -> None:
        """Makes the catalog say exactly what the host holds (reservations stay)."""
        with self.transaction() as tx:
            old = [r[0] for r in tx.q("SELECT id FROM databases WHERE host_id = ? AND "
                                      "state = 'ready'", host_id)]
            for db_id in old:
                tx.x("DELETE FROM branches WHERE database_id = ?", db_id)
            tx.x("DELETE FROM databases WHERE host_id = ? AND state = 'ready'", host_id)
            # A database in a move stays where the move has put it so far: both of
            # its hosts hold a copy until the move ends (coordinator/move_journal.py).
            moving = {str(r[0]) for r in tx.q(
                "SELECT m.database_id FROM moves m JOIN databases d ON d.id = m.database_id "
                "WHERE d.host_id <> ?", host_id)}
            entries = [e for e in entries if e.id not in moving]
            ids = {e.id for e in entries}
            touched = {host_id}
            for ref in (*ids, *(e.name for e in entries if e.name)):
                # A database moved, or its name was taken by a reservation elsewhere.
                found = tx.q("SELECT host_id FROM databases WHERE id = ? OR name = ?", ref, ref)
                if found:
                    touched.update(r[0] for r in found)
                    tx.x("DELETE FROM databases WHERE id = ? OR name = ?", ref, ref)
            tx.many(_INSERT_DB, [entry_values(e) for e in entries])
            tx.many("INSERT INTO branches (id, database_id) VALUES (?, ?) ON CONFLICT (id) "
                    "DO UPDATE SET database_id = excluded.database_id",
                    [(b, d) for b, d in branches.items() if d in ids])
            for touched_id in touched:
                self._recount(tx, touched_id)

    def add_branch(self, branch_id: str, database_id: str) -> None:
        with self.transaction() as tx:
            tx.x("INSERT INTO branches (id, database_id) VALUES (?, ?) ON CONFLICT (id) DO "
                 "UPDATE SET database_id = excluded.database_id", branch_id, database_id)

    def remove_branches(self, branch_ids: list[str]) -> None:
        with self.transaction() as tx:
            tx.many("DELETE FROM branches WHERE id = ?", [(b,) for b in branch_ids])

    def branch_database(self, branch_id: str) -> str | None:
        with self.transaction() as tx:
            rows = tx.q("SELECT database_id FROM branches WHERE id = ?", branch_id)
            return str(rows[0][0]) if rows else None

    # --- bulk loading (benchmarks) --------------------------------------------------

    def load(self, hosts: Iterator[tuple[Registration, int, int]],
             entries: list[CatalogEntry]) -> None:
        """Registers many hosts and catalog entries in one transaction."""
        with self.transaction() as tx:
            for reg, budget, max_clusters in hosts:
                tx.x("INSERT INTO hosts (id, address, zone, labels, pools, memory_bytes, "
                     "running_clusters, versions, database_count, disk_free, disk_size, "
                     "max_clusters, memory_budget, last_heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, "
                     "?, ?, ?, ?, ?, ?, 0)", reg.host_id, reg.address, reg.zone,
                     json.dumps(reg.labels), *_capacity_values(reg.capacity), max_clusters,
                     budget)
            tx.many(_INSERT_DB, [entry_values(e) for e in entries])
            tx.x("UPDATE hosts SET db_count = (SELECT COUNT(*) FROM databases d WHERE "
                 "d.host_id = hosts.id), memory_reserved = (SELECT COALESCE(SUM(memory_bytes), "
                 "0) FROM databases d WHERE d.host_id = hosts.id)")
