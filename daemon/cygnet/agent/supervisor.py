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
        inv = await self.host.inventory()
        now = time.monotonic()
        for db in inv.databases.values():
            lock = self.host.db_locks[db.id]
            if lock.locked() or db.phase != L.PHASE_READY:
                continue  # an operation is changing this database; look next round
            async with lock:
                for branch in db.branches.values():
                    if branch.phase != L.PHASE_READY or branch.desired != "running":
                        continue
                    if self.host.clusters.live(branch) is not None:
                        self._failures.pop(branch.id, None)
                        continue
                    failure = self._failures.get(branch.id)
                    if failure and now < failure.retry_at:
                        continue
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
        while not stop.is_set():
            try:
                await self.check_once()
            except Exception:
                log.exception("supervisor round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.host.config.supervise_interval)
