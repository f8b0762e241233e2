"""A branch's recoverable history: its archive chain, the snapshots that can start
a recovery, and the window of points it can be recovered to.

A snapshot can start a recovery on this branch's history when it belongs to
one of the chain's generations: taken on that generation's branch at or after
the generation's start, and before the newer generation leaves it (a parent's
snapshot from after the fork holds WAL the child never had). It serves targets
at or after the end of the WAL it holds (its recorded `high` LSN and time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from cygnet.agent import archive
from cygnet.agent.backups import catalog
from cygnet.agent.config import AgentConfig
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, SnapshotRecord
from cygnet.agent.recovery import Target
from cygnet.backup import BackupInfo
from cygnet.errors import OutOfRange
from cygnet.wal.lsn import format_lsn
from cygnet.wal.plan import Link, load_chain, selection, window
from cygnet.wal.points import WalPoint
from cygnet.wal.repo import WalObject

# Snapshots a recovery can start from: named, branch points and automatic ones
# (schedules); not a backup's temporary ones, which go when the backup ends.
RECOVERY_KINDS = frozenset({"user", "branch-point", "auto"})


@dataclass(frozen=True)
class Candidate:
    snapshot: SnapshotRecord
    branch: BranchRecord
    point: WalPoint
    end_lsn: int  # how far the archive reaches from it without a gap
    end_time: float


@dataclass
class History:
    database: DatabaseRecord
    branch: BranchRecord
    chain: list[Link]
    candidates: list[Candidate]  # oldest first

    @property
    def earliest(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def latest(self) -> Candidate | None:
        return max(self.candidates, key=lambda c: c.end_lsn, default=None)

    def describe(self) -> str:
        first, last = self.earliest, self.latest
        if first is None or last is None:
            return (f"nothing of {self.database.name}/{self.branch.name} is recoverable to a "
                    "point in time yet (no snapshot with archived WAL after it)")
        return (f"the recoverable window of {self.database.name}/{self.branch.name} is "
                f"{_when(first.point.time)} (LSN {format_lsn(first.point.high)}) to "
                f"{_when(last.end_time)} (LSN {format_lsn(last.end_lsn)})")

    def files(self, candidate: Candidate) -> list[WalObject]:
        return selection(self.chain, candidate.point.low)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00"


def load(config: AgentConfig, db: DatabaseRecord, branch: BranchRecord) -> History:
    """Reads the repository (blocking: run it in a thread)."""
    head, _ = archive.current_generation(config, db, branch)
    chain = load_chain(archive.repository(config), head)
    found: list[Candidate] = []
    newer_start: int | None = None
    for link in chain:
        g = link.generation
        owner = db.branches.get(g.branch_id)
        if owner is None:  # an ancestor deleted since: its snapshots went with it
            newer_start = g.start_lsn
            continue
        for snap in owner.snapshots:
            point = WalPoint.parse(snap.wal_point)
            if point is None or snap.kind not in RECOVERY_KINDS:
                continue
            if point.low < g.start_lsn:
                continue
            # A parent's snapshot from after the fork holds WAL the child never had;
            # the branch point itself (low == the child's start) is the child's too.
            if newer_start is not None and point.high > newer_start != point.low:
                continue
            reach = window(chain, point.low)
            if reach.end_lsn > point.high:
                found.append(Candidate(snap, owner, point, reach.end_lsn,
                                       max(reach.end_time, point.time)))
        newer_start = g.start_lsn if newer_start is None else min(newer_start, g.start_lsn)
    found.sort(key=lambda c: c.point.high)
    return History(db, branch, chain, found)


def backups(config: AgentConfig, history: History) -> list[BackupInfo]:
    """The repository's backups of the branch and of the ancestors its history
    continues, oldest first (blocking: reads the repository's manifests)."""
    owners = {history.branch.id} | {link.generation.branch_id for link in history.chain}
    return [i for i in catalog.list_backups(config.backup_repository)
            if i.metadata.get("database_id") == history.database.id
            and i.metadata.get("branch_id") in owners]


def choose(history: History, target: Target, now: float | None = None) -> Candidate:
    """The nearest candidate at or before `target` whose archive reaches it; else
    OUT_OF_RANGE naming the window."""
    now = time.time() if now is None else now
    if target.time and target.time > now:
        raise OutOfRange(f"{target.describe()} is in the future; {history.describe()}")
    if target.time and target.time < history.database.created:
        raise OutOfRange(f"{target.describe()} is before database {history.database.name!r} "
                         f"existed; {history.describe()}")
    if target.time:
        before = [c for c in history.candidates if c.point.time <= target.time]
        fits = [c for c in before if c.end_time >= target.time]
    elif target.lsn:
        before = [c for c in history.candidates if c.point.high <= target.lsn]
        fits = [c for c in before if c.end_lsn >= target.lsn]
    else:
        fits = list(history.candidates)
    if not fits:
        raise OutOfRange(f"{target.describe()} is outside what can be recovered: "
                         f"{history.describe()}")
    return max(fits, key=lambda c: c.point.high)
