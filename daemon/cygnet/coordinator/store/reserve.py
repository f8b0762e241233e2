"""Batched reservations and the leader's lease, as SQL on one transaction (a Tx).

A batch reserves many placements in three statements, whatever its size:
  1. the fence: the leadership row still carries this leader's epoch;
  2. one conditional UPDATE of the hosts, per host the sum of its placements,
     that only matches while the host still has room for all of them;
  3. one INSERT of the reservations (ON CONFLICT DO NOTHING: a taken name).
A request id placed before (by any coordinator, in any epoch) is answered
with that first reservation instead ("retry RESERVATION HOST").
A host that no longer has room (another coordinator filled it) is left
untouched and its placements are answered "full" so the leader retries them
elsewhere: the store, not any cache, decides whether a host has room.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cygnet.coordinator.store.schema import DB_COLUMNS, INDEX_COLUMNS
from cygnet.errors import Unavailable

Row = tuple[object, ...]


class Tx(Protocol):
    def q(self, sql: str, *params: object) -> list[Row]: ...

    def x(self, sql: str, *params: object) -> int: ...


class Fenced(Unavailable):
    """Another coordinator leads now: this one's batch is refused, nothing written."""


@dataclass(frozen=True)
class Item:
    """One reservation: the catalog row (entry values, host id at [2])."""

    values: tuple[object, ...]
    host_id: str
    memory: int
    disk: int


@dataclass(frozen=True)
class Dialect:
    greatest: str
    now: str  # the database's clock, in seconds since the epoch


OK, FULL, EXISTS, RETRY = "ok", "full", "exists", "retry"

_INSERT_HEAD = f"INSERT INTO databases ({DB_COLUMNS}) VALUES "
_ROW = "(" + ", ".join("?" * 15) + ")"
_HOST_ROW = "(?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT))"


def commit_batch(tx: Tx, dialect: Dialect, epoch: int, items: Sequence[Item]) -> list[str]:
    """OK, FULL or EXISTS per item, in order; Fenced when `epoch` no longer leads."""
    fence(tx, epoch)
    earlier = _earlier(tx, items)
    fresh = [it for it in items if str(it.values[10]) not in earlier]
    roomy = add_to_hosts(tx, dialect, totals(fresh), conditional=True)
    placed = [it for it in fresh if it.host_id in roomy]
    inserted: set[str] = set()
    if placed:
        sql = (_INSERT_HEAD + ", ".join([_ROW] * len(placed))
               + " ON CONFLICT DO NOTHING RETURNING id")
        inserted = {str(r[0]) for r in tx.q(sql, *[v for it in placed for v in it.values])}
    taken = [it for it in placed if str(it.values[0]) not in inserted]
    if taken:
        # Their names were taken meanwhile: give their room back.
        add_to_hosts(tx, dialect, totals(taken, -1), conditional=False)
    return [earlier.get(str(it.values[10])) or (
        OK if str(it.values[0]) in inserted else EXISTS if it.host_id in roomy else FULL)
        for it in items]


def fence(tx: Tx, epoch: int) -> None:
    """Fenced unless `epoch` still leads; its row lock holds a takeover off until commit."""
    if epoch and tx.x("UPDATE leadership SET epoch = epoch WHERE id = 1 AND epoch = ?",
                      epoch) != 1:
        raise Fenced("this coordinator is no longer the leader; retry the request")


def _earlier(tx: Tx, items: Sequence[Item]) -> dict[str, str]:
    """Request ids placed before (by any coordinator): RETRY + "reservation host"."""
    ids = sorted({str(it.values[10]) for it in items if it.values[10]})
    if not ids:
        return {}
    rows = tx.q("SELECT request_id, id, host_id FROM databases WHERE request_id IN "
                f"({', '.join('?' * len(ids))})", *ids)
    return {str(rid): f"{RETRY} {res} {host}" for rid, res, host in rows}


def totals(items: Sequence[Item], sign: int = 1) -> dict[str, list[int]]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for it in items:
        t = totals[it.host_id]
        t[0] += sign * it.memory
        t[1] += sign * it.disk
        t[2] += sign
    return totals


def add_to_hosts(tx: Tx, dialect: Dialect, sums: dict[str, list[int]],
                 conditional: bool) -> set[str]:
    """Adds to the hosts' counters; with `conditional`, only where it all still fits."""
    if not sums:
        return set()
    g = dialect.greatest
    # "IS TRUE": not an index condition, so the planner finds the host by its key;
    # with stale statistics (a fleet just registered) it would scan every host
    # through hosts_placeable instead (2 ms at 10,000 hosts).
    fits = (" AND (hosts.available = 1 AND hosts.drained = 0) IS TRUE "
            "AND hosts.memory_reserved + v.m <= hosts.memory_budget AND hosts.disk_size > 0 "
            "AND hosts.disk_free - hosts.pending_disk - v.d >= 0 "
            f"AND {g}(hosts.db_count, hosts.running_clusters) + v.n <= hosts.max_clusters"
            if conditional else "")
    sql = (f"WITH v(id, m, d, n) AS (VALUES {', '.join([_HOST_ROW] * len(sums))}) "
           "UPDATE hosts SET memory_reserved = hosts.memory_reserved + v.m, "
           "pending_disk = hosts.pending_disk + v.d, db_count = hosts.db_count + v.n "
           f"FROM v WHERE hosts.id = v.id{fits} RETURNING hosts.id")
    params = [p for host, t in sums.items() for p in (host, *t)]
    return {str(r[0]) for r in tx.q(sql, *params)}


# --- the leader's lease ------------------------------------------------------------


def hold_lease(tx: Tx, dialect: Dialect, holder: str, epoch: int, ttl: float) -> int:
    """Renews `epoch`'s lease, or takes an expired one: the epoch held, 0 if none."""
    now = dialect.now
    tx.x("INSERT INTO leadership (id, epoch, holder, lease_until) VALUES (1, 0, '', 0) "
         "ON CONFLICT (id) DO NOTHING")
    if epoch and tx.x(f"UPDATE leadership SET lease_until = {now} + ? WHERE id = 1 AND "
                      "epoch = ? AND holder = ?", ttl, epoch, holder) == 1:
        return epoch
    rows = tx.q(f"UPDATE leadership SET epoch = epoch + 1, holder = ?, lease_until = {now} + ? "
                f"WHERE id = 1 AND lease_until < {now} RETURNING epoch", holder, ttl)
    return int(str(rows[0][0])) if rows else 0


def give_up_lease(tx: Tx, holder: str, epoch: int) -> None:
    tx.x("UPDATE leadership SET lease_until = 0 WHERE id = 1 AND epoch = ? AND holder = ?",
         epoch, holder)


def leader(tx: Tx) -> tuple[int, str]:
    rows = tx.q("SELECT epoch, holder FROM leadership WHERE id = 1")
    return (int(str(rows[0][0])), str(rows[0][1])) if rows else (0, "")


# --- what the index is built from ------------------------------------------------------


def index_rows(tx: Tx, host_id: str = "") -> tuple[list[Row], list[Row]]:
    """Host rows (INDEX_COLUMNS) and (group, host) pairs, for all hosts or one."""
    if host_id:
        return (tx.q(f"SELECT {INDEX_COLUMNS} FROM hosts WHERE id = ?", host_id),
                tx.q("SELECT DISTINCT affinity_group, host_id FROM databases WHERE "
                     "host_id = ? AND affinity_group <> ''", host_id))
    return (tx.q(f"SELECT {INDEX_COLUMNS} FROM hosts"),
            tx.q("SELECT DISTINCT affinity_group, host_id FROM databases WHERE "
                 "affinity_group <> ''"))


def labels_of(row: Row) -> dict[str, str]:
    loaded = json.loads(str(row[4]) or "{}")
    return {str(k): str(v) for k, v in loaded.items()}
