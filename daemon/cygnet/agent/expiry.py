"""Branch expiry: TTLs, the effective-expiry rule, and the loop that deletes.

A branch's own expiry is the ZFS user property `cygnet:expires` (unix time) on
its dataset. The rule for trees: a branch never expires before its children.
Its *effective* expiry is the latest of its own expiry, its protection's end
(a protected branch waits for its lease to lapse) and its children's effective
expiries; a branch without an expiry, or protected without a lease, never
expires, and so neither does any ancestor while it exists. `main` never
expires (it goes with its database).

Every `expiry_interval` seconds the daemon looks through its cached view of the
host (kept fresh by every operation and the supervisor's resync) and deletes,
under the database's lock and after reading it again, each branch whose effective
expiry has passed, with its descendants (whose own effective expiries have
passed too, by the rule), their snapshots, and the branch points they were
cloned from when no other clone needs them: events EXPIRED, then DELETED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from cygnet.agent import branches as br
from cygnet.agent import layout as L
from cygnet.agent.events import EventKind, emit
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.agent.protection import is_protected
from cygnet.errors import CygnetError

log = logging.getLogger("cygnet.expiry")

NEVER = float("inf")
expired_total = 0  # branches deleted by expiry since the daemon started (metrics)
_announced: set[str] = set()  # branches whose expired event went out, until deleted


Children = dict[str, list[BranchRecord]]  # a database's branches by their parent's id


def children_index(db: DatabaseRecord) -> Children:
    """Each branch's children, in one pass: the rule below walks them for every
    branch, and a scan per branch is a million steps at 1,000 branches."""
    kids: Children = {}
    for b in db.branches.values():
        kids.setdefault(b.parent_id, []).append(b)
    return kids


def effective_expiry(db: DatabaseRecord, branch: BranchRecord, now: float | None = None,
                     kids: Children | None = None) -> float:
    """When the branch may expire, by the rule above; NEVER when it may not.
    `kids` (children_index), when given, spares a scan of the database's branches."""
    if branch.is_main or not branch.expires_at:
        return NEVER
    if kids is None:
        kids = children_index(db)
    when = branch.expires_at
    if is_protected(branch, now):
        when = max(when, branch.protected_until or NEVER)
    for child in kids.get(branch.id, ()):
        when = max(when, effective_expiry(db, child, now, kids))
        if when == NEVER:
            break
    return when


def due(db: DatabaseRecord, now: float) -> list[BranchRecord]:
    """The topmost ready branches whose effective expiry has passed."""
    kids = children_index(db)
    out = []
    for branch in db.branches.values():
        if branch.phase != L.PHASE_READY or effective_expiry(db, branch, now, kids) > now:
            continue
        parent = db.branches.get(branch.parent_id)
        if parent is not None and effective_expiry(db, parent, now, kids) <= now:
            continue  # goes with its parent
        out.append(branch)
    return out


async def expire_database(host: Host, database_id: str) -> list[str]:
    """Deletes what is due in one database, under its lock, re-read under it."""
    global expired_total
    lock = host.db_locks[database_id]
    async with lock:
        inv = await host.database_inventory(database_id)
        db = inv.databases.get(database_id)
        if db is None or db.phase != L.PHASE_READY:
            return []
        now = time.time()
        deleted: list[str] = []
        for top in due(db, now):
            if top.id not in db.branches:
                continue
            victims = [*db.descendants(top.id), top]
            for victim in victims:
                if victim.id in _announced:
                    continue  # a delete that failed is retried without a second event
                _announced.add(victim.id)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(victim.expires_at))
                emit(EventKind.EXPIRED, database_id=db.id, branch_id=victim.id,
                     database=db.name, branch=victim.name, reason=f"expired at {stamp}")
            log.info("branch %s/%s (%s) expired: deleting it with %d descendant(s)",
                     db.name, top.name, top.id, len(victims) - 1)
            gone = await br.delete_branch(host, db, top.id, cascade=True)
            expired_total += len(gone)
            deleted += gone
            for victim in victims:
                db.branches.pop(victim.id, None)
                _announced.discard(victim.id)
        return deleted


async def sweep(host: Host) -> list[str]:
    """One pass over the host: the daemon's cached view says where to look (no ZFS
    read per pass), each database's lock and fresh read decide."""
    now = time.time()
    deleted: list[str] = []
    for db in list(host.known.values()):
        if db.phase == L.PHASE_READY and due(db, now):
            try:
                deleted += await expire_database(host, db.id)
            except CygnetError as exc:
                log.error("expiry of database %s: %s", db.name, exc)
    return deleted


async def run(host: Host, stop: asyncio.Event) -> None:
    """The daemon's expiry loop."""
    interval = max(0.05, host.config.expiry_interval)
    await host.catalog()  # the cached view, in case nothing has read it yet
    while not stop.is_set():
        try:
            await sweep(host)
        except Exception:
            log.exception("expiry sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
