"""Keeps every branch that should run, running: restarts dead postmasters with backoff.

A postmaster's exit wakes it at once (agent/deathwatch.py); a round every
`supervise_interval` also looks at every branch, for what the watch misses.

It also keeps what cygnetd owns in place: on every resync it mounts its
datasets that are not mounted (a pool re-imported after a reboot may come back
unmounted) and makes each pool's reserve again once there is room for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from cygnet.agent import layout as L
from cygnet.agent.deathwatch import DeathWatch
from cygnet.agent.events import EventKind, emit
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.errors import FailedPrecondition
from cygnet.states import Desired
from cygnet.zfs.kernel_mounts import mount_points

log = logging.getLogger("cygnet.agent")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
# How often the whole host is re-read from ZFS (seconds).
RESYNC_INTERVAL = 60.0
# At most every this many times the last resync's own duration.
RESYNC_SHARE = 20.0
# How often a pool short of its reserve is looked at again (seconds).
RESERVE_INTERVAL = 5.0
# Suspended branches unmounted again per round at most (each a `zfs umount`), so a
# host with many mounted ones (park_suspended just turned on) still checks its own.
PARKS_PER_ROUND = 16


@dataclass
class _Failure:
    count: int
    retry_at: float
    reason: str = ""
    unavailable: bool = False  # the data is not there (unmounted), rather than a failed start


class Supervisor:
    def __init__(self, host: Host) -> None:
        self.host = host
        self._failures: dict[str, _Failure] = {}
        self.restarts = 0  # postmasters this supervisor brought back
        self.deaths = DeathWatch()
        self._parks_left = PARKS_PER_ROUND
        self._mount_table: set[str] | None = None
        self._keep_mounted: set[str] = set()

    def is_failing(self, branch_id: str) -> bool:
        return branch_id in self._failures

    def is_unavailable(self, branch_id: str) -> bool:
        failure = self._failures.get(branch_id)
        return failure is not None and failure.unavailable

    def reason(self, branch_id: str) -> str:
        """Why the branch is not running as it should ("" if nothing is known)."""
        failure = self._failures.get(branch_id)
        return failure.reason if failure else ""

    def forget(self, branch_id: str) -> None:
        """An operator's start/stop wipes the backoff slate."""
        self._failures.pop(branch_id, None)
        self._keep_mounted.discard(branch_id)

    def keep_mounted(self, branch_id: str) -> None:
        """A suspended branch whose wake failed stays mounted until it starts, so that
        its log and files can be read and repaired where they are."""
        self._keep_mounted.add(branch_id)

    def record_failure(self, branch_id: str, reason: str = "", *,
                       unavailable: bool = False) -> float:
        previous = self._failures.get(branch_id)
        count = previous.count + 1 if previous else 1
        delay: float = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (count - 1))
        if unavailable:  # a mount comes back at any moment: look often
            delay = BACKOFF_FIRST
        self._failures[branch_id] = _Failure(count, time.monotonic() + delay, reason,
                                             unavailable)
        return delay

    async def ensure_data(self, branch: BranchRecord) -> bool:
        """True when the branch's files are there; otherwise tries to mount them and,
        failing that, records the branch as unavailable with the reason."""
        if self.host.mounted(branch) or await self._mount_own(branch):
            if self.host.clusters.pgdata(branch).joinpath("PG_VERSION").is_file():
                return True
            reason = "its data directory is missing from its dataset"
        else:
            reason = "its ZFS dataset is not mounted, and cygnetd could not mount it"
        if not self.is_unavailable(branch.id):
            log.error("branch %s cannot start: %s", branch.id, reason)
        self.record_failure(branch.id, reason, unavailable=True)
        return False

    async def require_data(self, branch: BranchRecord) -> None:
        """FailedPrecondition, saying why, when the branch's files are not there."""
        if not await self.ensure_data(branch):
            raise FailedPrecondition(f"branch {branch.name!r} is unavailable: "
                                     f"{self.reason(branch.id)}")

    async def _mount_own(self, branch: BranchRecord) -> bool:
        if await self.host.mount_branch(branch):  # a parked branch: its dataset alone
            return True
        try:
            await self.host.space.mount_own()
        except Exception:
            log.exception("mounting the datasets of %s failed", branch.id)
        return self.host.mounted(branch)

    async def check_once(self) -> None:
        """Checks every branch that should run, from the cached view of the host.

        Liveness is a /proc lookup, so a round costs nothing per branch that
        is fine; only a dead postmaster makes us read its database from ZFS.
        """
        now = time.monotonic()
        self._parks_left, self._mount_table = PARKS_PER_ROUND, None
        for db in list(self.host.known.values()):
            lock = self.host.db_locks[db.id]
            if lock.locked() or db.phase != L.PHASE_READY:
                continue  # an operation is changing this database; look next round
            for branch in list(db.branches.values()):
                if branch.phase == L.PHASE_READY and self.host.parks(branch):
                    await self._repark(db.id, branch)
                if branch.phase != L.PHASE_READY or branch.desired != Desired.RUNNING:
                    continue
                live = self.host.clusters.live(branch)
                if live is not None:
                    self._failures.pop(branch.id, None)
                    self.deaths.watch(live.pid)
                    continue
                failure = self._failures.get(branch.id)
                if failure is None or now >= failure.retry_at:
                    await self._restart_if_still_wanted(db.id, branch.id)

    async def _repark(self, database_id: str, branch: BranchRecord) -> None:
        """Unmounts a suspended branch that an operation mounted (its settings read,
        a snapshot of it taken), once nothing else holds its database."""
        if self._parks_left <= 0 or branch.id in self._keep_mounted:
            return
        # The kernel's table, read once a round: a stat per suspended branch would
        # be a FUSE call each on zfs-fuse, every second, for every one of them.
        if self._mount_table is None:
            self._mount_table = mount_points()
        if str(self.host.clusters.files(branch).mount) not in self._mount_table:
            return
        lock = self.host.db_locks[database_id]
        if lock.locked():
            return
        self._parks_left -= 1
        async with lock:
            # The latest record: an operation may have changed it since the round began.
            db = self.host.known.get(database_id)
            now = db.branches.get(branch.id) if db is not None else None
            if (now is not None and self.host.parks(now) and not now.port
                    and self.host.clusters.live(now) is None):
                await self.host.park(now)

    async def _restart_if_still_wanted(self, database_id: str, branch_id: str) -> None:
        """Re-reads the database under its lock: the cache may be behind."""
        async with self.host.db_locks[database_id]:
            inv = await self.host.database_inventory(database_id)
            db = inv.databases.get(database_id)
            branch = db.branches.get(branch_id) if db else None
            if (db is None or branch is None or branch.phase != L.PHASE_READY
                    or branch.desired != Desired.RUNNING or self.host.clusters.live(branch)):
                return
            await self._restart(db, branch)

    async def _restart(self, db: DatabaseRecord, branch: BranchRecord) -> None:
        if not await self.ensure_data(branch):
            return
        log.warning("postmaster of %s/%s (%s) is down; starting it", db.name, branch.name,
                    branch.id)
        if not self.is_failing(branch.id):  # once per outage, not per retry
            emit(EventKind.FAILED, database_id=db.id, branch_id=branch.id, database=db.name,
                 branch=branch.name, reason="its postmaster was down; restarting it")
        started = time.monotonic()
        try:
            await self.host.clusters.start(branch, db)
        except Exception as exc:  # the log says why; we retry later
            delay = self.record_failure(branch.id, f"Postgres did not start: {_first_line(exc)}")
            log.error("start of %s failed (%s); retrying in %.0fs", branch.id, exc, delay)
            return
        log.info("postmaster of %s back in %.3fs", branch.id, time.monotonic() - started)
        self.restarts += 1
        self._failures.pop(branch.id, None)
        emit(EventKind.READY, database_id=db.id, branch_id=branch.id, database=db.name,
             branch=branch.name, reason="restarted by the supervisor")

    async def run(self, stop: asyncio.Event) -> None:
        # The reconciler has just read everything: the first resync can wait, unless
        # the start took the catalog a clean stop saved (agent/catalog_file.py).
        resync_at = time.monotonic() + (0.0 if self.host.datasets is not None
                                        and self.host.datasets.from_saved else RESYNC_INTERVAL)
        reserve_at = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                try:
                    if now >= resync_at:
                        await self.resync()
                        # A recursive read stalls zfs-fuse for everyone (6 s at 1,000
                        # branches on a busy host): keep it to 5% of the time.
                        took = time.monotonic() - now
                        log.debug("resync took %.3fs", took)
                        resync_at = now + max(RESYNC_INTERVAL, RESYNC_SHARE * took)
                    if now >= reserve_at:
                        await self.host.space.ensure_missing_reserves()
                        reserve_at = now + RESERVE_INTERVAL
                    await self.check_once()
                except Exception:
                    log.exception("supervisor round failed")
                await self.deaths.pause(stop, self.host.config.supervise_interval)
        finally:
            self.deaths.close()

    async def resync(self) -> None:
        """Catches changes made behind our back: ZFS state, mounts, reserves."""
        await self.host.resync()  # one recursive read: the catalog, mounts included
        await self.host.mount_unmounted()
        await self.host.space.ensure_reserves()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
