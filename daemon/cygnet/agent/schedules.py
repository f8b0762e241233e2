"""The scheduler: automatic snapshots, cron backups and their retention, per database.

Every `schedule_tick` seconds it reads each database's schedule (ZFS
properties, agent/backups/schedule.py) and, for its main branch:

- takes an automatic snapshot once `snapshot_every` has passed since the
  newest one (these bound point-in-time replay);
- runs a backup when the cron expression has matched since the last one;
- prunes automatic snapshots and scheduled backups by the retention policy.

Due-ness is computed from what exists (the newest automatic snapshot, the
last run recorded on the database), never from a count of ticks: after a
downtime each due thing runs once, not once per missed interval. Pruning
keeps a snapshot a branch was cloned from, and the repository's prune
rewrites any delta whose base goes (backup/prune.py), so nothing a retained
point needs is removed. Manual snapshots and backups are never pruned here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from cygnet import backup
from cygnet.agent import archive_prune
from cygnet.agent import layout as L
from cygnet.agent.backups import catalog
from cygnet.agent.backups import schedule as S
from cygnet.agent.backups.create import backup_branch
from cygnet.agent.backups.progress import Reporter
from cygnet.agent.backups.service import PRUNE_LOCK_TIMEOUT, BackupService
from cygnet.agent.branches import take_snapshot
from cygnet.agent.events import EventKind, emit
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, SnapshotRecord
from cygnet.backup import BackupInfo
from cygnet.backup.retention import Decision, Point, select
from cygnet.states import Desired
from cygnet.zfs import DatasetNotFound

log = logging.getLogger("cygnet.schedules")
T = TypeVar("T")


class _Stats:
    """What /metrics reports (metrics()): runs by kind and outcome, failing databases."""

    def __init__(self) -> None:
        self.runs: Counter[tuple[str, str]] = Counter()
        self.failing: dict[str, str] = {}  # database id -> name
        self.active = False

    def ran(self, kind: str, ok: bool) -> None:
        self.runs[(kind, "ok" if ok else "error")] += 1


_stats = _Stats()


def metrics() -> list[Metric]:
    if not _stats.active:
        return []
    runs = CounterMetricFamily("cygnet_schedule_runs",
                               "Scheduled snapshots, backups and prunes, by outcome",
                               labels=["kind", "outcome"])
    for kind in ("snapshot", "backup", "prune"):
        for outcome in ("ok", "error"):
            runs.add_metric([kind, outcome], float(_stats.runs[(kind, outcome)]))
    failing = GaugeMetricFamily(
        "cygnet_schedule_failing", "1 for a database whose last scheduled run failed",
        labels=["database", "database_id"])
    for db_id, name in sorted(_stats.failing.items()):
        failing.add_metric([name, db_id], 1.0)
    return [runs, failing]


def auto_snapshots(branch: BranchRecord) -> list[SnapshotRecord]:
    """Oldest first."""
    return sorted((s for s in branch.snapshots if s.kind == S.AUTO), key=lambda s: s.created)


def scheduled_backups(infos: list[BackupInfo], db_id: str, branch_id: str) -> list[BackupInfo]:
    return [i for i in infos if i.metadata.get("trigger") == S.SCHEDULE_TRIGGER
            and i.metadata.get("database_id") == db_id and i.metadata.get("branch_id") == branch_id]


@dataclass(frozen=True)
class Pruned:
    snapshots: Decision
    backups: Decision | None  # None: backups were not looked at this time


def oldest_of(snapshots: Decision, oldest_backup: float | None) -> float | None:
    snap = snapshots.oldest_kept
    times = [t for t in (snap.at if snap is not None else None, oldest_backup) if t is not None]
    return min(times) if times else None


async def oldest_retained(host: Host, db: DatabaseRecord) -> float:
    """The oldest recovery point (automatic snapshot or scheduled backup) the
    database's retention keeps, as recorded by the last prune; 0 if none yet.
    WAL older than it is needed by no scheduled recovery point."""
    return (await S.read(host, db)).retained_since


class Scheduler:
    def __init__(self, backups: BackupService) -> None:
        self.backups = backups
        self.host = backups.host
        # Databases whose backups were pruned since start -> the oldest one kept
        # (None: none), so a snapshot-only prune still knows it.
        self._oldest_backup: dict[str, float | None] = {}
        _stats.active = True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick(time.time())
            except Exception:  # one bad tick must not end scheduling
                log.exception("scheduler tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.host.config.schedule_tick)

    async def tick(self, now: float) -> None:
        inv = await self.host.inventory()
        ready = [db for db in inv.databases.values() if db.phase == L.PHASE_READY
                 and db.main is not None and db.main.phase == L.PHASE_READY]
        schedules = await S.read_all(self.host, ready)
        for db in ready:
            assert db.main is not None
            try:
                if await self._database(db, db.main, schedules[db.id], now):
                    _stats.failing.pop(db.id, None)  # what was due ran
            except Exception as exc:
                log.warning("schedule of database %s: %s", db.name, exc)
                _stats.failing[db.id] = db.name
                with contextlib.suppress(Exception):
                    await S.record_run(self.host, db, error=str(exc) or type(exc).__name__)

    async def _database(self, db: DatabaseRecord, main: BranchRecord, sched: S.Schedule,
                        now: float) -> bool:
        """Runs what is due; returns whether anything was."""
        snaps = auto_snapshots(main)
        took = False
        if main.desired == Desired.RUNNING and S.snapshot_due(
                sched, snaps[-1].created if snaps else 0.0, now):
            await _counted("snapshot", self._snapshot(db, main, now))
            took = True
        ran = False
        due = S.next_backup(sched)
        if due is not None and due <= now:
            await _counted("backup", self._backup(db, main, now))
            ran = True
        # The rules keep the same points until a point is added, except keep_within.
        first = db.id not in self._oldest_backup
        if took or ran or first or (snaps and sched.retention.keep_within_s):
            pruned = await _counted("prune", self.prune(
                db, sched, now, snapshots=took or bool(snaps), backups=ran or first))
            oldest = self._oldest_kept(db.id, pruned)
            if oldest is not None and abs(oldest - sched.retained_since) > 1e-3:
                await S.record_run(self.host, db, retained_since=oldest)
            if oldest is not None:  # archived WAL no kept point needs goes too
                await asyncio.to_thread(archive_prune.prune_database, self.host.config, db,
                                        oldest)
        return took or ran

    def _oldest_kept(self, db_id: str, pruned: Pruned) -> float | None:
        """The oldest point kept of either kind: what WAL pruning must not pass."""
        if pruned.backups is not None:
            kept = pruned.backups.oldest_kept
            self._oldest_backup[db_id] = kept.at if kept is not None else None
        return oldest_of(pruned.snapshots, self._oldest_backup.get(db_id))

    async def _snapshot(self, db: DatabaseRecord, main: BranchRecord, now: float) -> None:
        name = "auto-" + datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
        async with self.host.db_locks[db.id]:
            fresh = (await self.host.inventory()).databases.get(db.id)
            branch = fresh.branches.get(main.id) if fresh is not None else None
            if branch is None or branch.phase != L.PHASE_READY:
                return
            await self.host.space.require_free(branch.dataset, "an automatic snapshot")
            snapshot, _ = await take_snapshot(self.host, branch, L.new_id("sn"), name, S.AUTO, "")
        log.info("automatic snapshot %s of %s/main", snapshot, db.name)
        emit(EventKind.CREATED, database_id=db.id, branch_id=main.id, database=db.name,
             branch=main.name, reason=f"automatic snapshot {name}")

    async def _backup(self, db: DatabaseRecord, main: BranchRecord, now: float) -> None:
        """Recorded as run even when it fails, so a failing backup is retried at the
        next match, not at every tick; the error shows in GetSchedule."""
        await S.record_run(self.host, db, backup_at=now)
        await self.host.require_free_for(main.id, "a backup")
        async with self.backups.writer:
            info = await backup_branch(self.host, self.backups.repo, main.id, Reporter(),
                                       trigger=S.SCHEDULE_TRIGGER)
        await S.record_run(self.host, db, error="")
        log.info("scheduled backup %s of %s/main", info.backup_id, db.name)
        emit(EventKind.CREATED, database_id=db.id, branch_id=main.id, database=db.name,
             branch=main.name, reason=f"scheduled backup {info.backup_id}")

    async def prune(self, db: DatabaseRecord, sched: S.Schedule, now: float, *,
                    snapshots: bool = True, backups: bool = True) -> Pruned:
        """Applies the retention to main's automatic snapshots and scheduled backups."""
        snaps = (await self._prune_snapshots(db, sched, now) if snapshots
                 else Decision([], [], {}))
        decided = await self._prune_backups(db, sched, now) if backups else None
        return Pruned(snaps, decided)

    async def _prune_snapshots(self, db: DatabaseRecord, sched: S.Schedule, now: float
                               ) -> Decision:
        async with self.host.db_locks[db.id]:
            fresh = (await self.host.inventory()).databases.get(db.id)
            main = fresh.main if fresh is not None else None
            snaps = auto_snapshots(main) if main is not None else []
            # A snapshot a branch was cloned from is that branch's origin: kept.
            pinned = {s.id for s in snaps if s.clones}
            decision = select([Point(s.id, s.created) for s in snaps], sched.retention, now,
                              pinned)
            doomed = {p.id for p in decision.drop}
            for snap in snaps:
                if snap.id in doomed:
                    with contextlib.suppress(DatasetNotFound):
                        await self.host.zfs.destroy(snap.dataset)
                    emit(EventKind.DELETED, database_id=db.id, branch_id=snap.branch_id,
                         database=db.name, reason=f"retention pruned snapshot {snap.name}")
        return decision

    async def _prune_backups(self, db: DatabaseRecord, sched: S.Schedule, now: float
                             ) -> Decision:
        main = db.main
        infos = await asyncio.to_thread(catalog.list_backups, self.backups.repo)
        mine = scheduled_backups(infos, db.id, main.id if main is not None else "")
        decision = select([Point(i.backup_id, i.created_at.timestamp()) for i in mine],
                          sched.retention, now)
        if decision.drop:
            doomed = sorted(p.id for p in decision.drop)
            async with self.backups.writer:
                await asyncio.to_thread(backup.prune, self.backups.repo, delete=doomed,
                                        lock_timeout=PRUNE_LOCK_TIMEOUT)
            log.info("retention pruned %d scheduled backups of %s", len(doomed), db.name)
            emit(EventKind.DELETED, database_id=db.id, database=db.name,
                 reason=f"retention pruned backups {', '.join(doomed)}")
        return decision


async def _counted(kind: str, run: Awaitable[T]) -> T:
    try:
        result = await run
    except BaseException:
        _stats.ran(kind, False)
        raise
    _stats.ran(kind, True)
    return result
