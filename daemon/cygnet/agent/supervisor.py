"""Keeps every branch that should run, running: restarts dead postmasters with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from cygnet.agent import layout as L
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord

log = logging.getLogger("cygnet.agent")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
# Every this many rounds the whole host is re-read from ZFS.
RESYNC_ROUNDS = 60


@dataclass
class _Failure:
    count: int
    retry_at: float


class Supervisor:
    def __init__(self, host: Host) -> None:
        self.host = host
        self._failures: dict[str, _Failure] = {}
        self.restarts = 0  # postmasters this supervisor brought back

    def is_failing(self, branch_id: str) -> bool:
        return branch_id in self._failures

    def forget(self, branch_id: str) -> None:
        """An operator's start/stop wipes the backoff slate."""
        self._failures.pop(branch_id, None)

    def record_failure(self, branch_id: str) -> float:
        previous = self._failures.get(branch_id)
        count = previous.count + 1 if previous else 1
        delay: float = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (count - 1))
        self._failures[branch_id] = _Failure(count, time.monotonic() + delay)
        return delay

    async def check_once(self) -> None:
        """Checks every branch that should run, from the cached view of the host.

        Liveness is a /proc lookup, so a round costs nothing per branch that
        is fine; only a dead postmaster makes us read its database from ZFS.
        """
        now = time.monotonic()
        for db in list(self.host.known.values()):
            lock = self.host.db_locks[db.id]
            if lock.locked() or db.phase != L.PHASE_READY:
                continue  # an operation is changing this database; look next round
            for branch in list(db.branches.values()):
                if branch.phase != L.PHASE_READY or branch.desired != "running":
                    continue
                if self.host.clusters.live(branch) is not None:
                    self._failures.pop(branch.id, None)
                    continue
                failure = self._failures.get(branch.id)
                if failure is None or now >= failure.retry_at:
                    await self._restart_if_still_wanted(db.id, branch.id)

    async def _restart_if_still_wanted(self, database_id: str, branch_id: str) -> None:
        """Re-reads the database under its lock: the cache may be behind."""
        async with self.host.db_locks[database_id]:
            inv = await self.host.database_inventory(database_id)
            db = inv.databases.get(database_id)
            branch = db.branches.get(branch_id) if db else None
            if (db is None or branch is None or branch.phase != L.PHASE_READY
                    or branch.desired != "running" or self.host.clusters.live(branch)):
                return
            await self._restart(db, branch)

    async def _restart(self, db: DatabaseRecord, branch: BranchRecord) -> None:
        log.warning("postmaster of %s/%s (%s) is down; starting it", db.name, branch.name,
                    branch.id)
        try:
            await self.host.clusters.start(branch, db)
        except Exception as exc:  # the log says why; we retry later
            delay = self.record_failure(branch.id)
            log.error("start of %s failed (%s); retrying in %.0fs", branch.id, exc, delay)
            return
        self.restarts += 1
        self._failures.pop(branch.id, None)

    async def run(self, stop: asyncio.Event) -> None:
        rounds = 0
        while not stop.is_set():
            try:
                if rounds % RESYNC_ROUNDS == 0:
                    await self.host.inventory()  # catch changes made behind our back
                rounds += 1
                await self.check_once()
            except Exception:
                log.exception("supervisor round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.host.config.supervise_interval)
