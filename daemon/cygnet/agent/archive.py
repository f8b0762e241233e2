"""Continuous WAL archiving: which branches archive, their settings, the spool
ingestion loop, archive generations and the lag metrics (docs/durability.md).

Postgres' archive_command is the C program `cygnet-wal` (native/wal/): it
copies each finished WAL file into the branch's spool with fsync, and refuses
once the spool passes its bound so Postgres keeps the WAL. This loop moves
spooled files into the backup repository (wal/repo.py) every
`wal_ingest_interval` seconds; a forced segment switch every
`wal_archive_timeout` seconds bounds how old the newest archived WAL can be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

import cygnet
from cygnet.agent.config import AgentConfig
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.postgres.config import ArchiveSettings
from cygnet.postgres.layout import postgres_user
from cygnet.wal import spool
from cygnet.wal.points import WalPoint
from cygnet.wal.repo import Generation, WalRepository

log = logging.getLogger("cygnet.agent")

PROGRAM = Path(cygnet.__file__).parent / "bin" / "cygnet-wal"


def enabled(db: DatabaseRecord, branch: BranchRecord) -> bool:
    """The branch's `cygnet:archive`, else its database's, else on for main only."""
    value = branch.archive or db.archive
    return value == "on" if value in ("on", "off") else branch.is_main


def spool_root(config: AgentConfig) -> Path:
    return config.wal_spool_dir or config.state_dir / "wal-spool"


def repository(config: AgentConfig) -> WalRepository:
    return WalRepository(config.backup_repository)


def generation(branch: BranchRecord) -> int:
    return branch.wal_gen or 1


def parse_fork(text: str) -> tuple[int, WalPoint] | None:
    """`cygnet:fork` = PARENT_GEN:POINT."""
    gen, _, point = text.partition(":")
    parsed = WalPoint.parse(point)
    return (int(gen), parsed) if gen.isdigit() and parsed is not None else None


def current_generation(config: AgentConfig, db: DatabaseRecord, branch: BranchRecord
                       ) -> tuple[Generation, bool]:
    """The branch's current generation, and whether the repository records it.

    A rewind records its generation itself (`rewind`); an unrecorded one is a
    branch's first: main's starts at LSN 0, a child's continues its parent's
    from its fork, and one whose fork is unknown has only its own WAL (it
    starts at 0 and owns every segment it archives, never one of another
    branch). A branch that does not archive still has one: its history before
    its fork is its ancestors'.
    """
    gen = generation(branch)
    recorded = repository(config).generation(branch.id, gen)
    if recorded is not None:
        return recorded, True
    base_branch, base_gen, start, when = "", 0, 0, 0.0
    fork = parse_fork(branch.fork)
    # An upgrade rehearsal's WAL (pg_upgrade's new cluster) does not continue its parent's.
    if fork is not None and branch.parent_id and gen == 1 and not branch.version:
        base_branch, base_gen, start, when = branch.parent_id, fork[0], fork[1].low, fork[1].time
    return Generation(branch.id, gen, start, base_branch, base_gen, db.id, db.name,
                      branch.name, time.time(), when), False


def ensure_generation(config: AgentConfig, db: DatabaseRecord, branch: BranchRecord) -> None:
    """Records the branch's current generation in the repository if it is not yet."""
    current, recorded = current_generation(config, db, branch)
    if not recorded:
        repository(config).begin(current)


def rewind(config: AgentConfig, db: DatabaseRecord, branch: BranchRecord,
           point: WalPoint | None, base: tuple[str, int]) -> None:
    """A rewind (reset, reset to a snapshot, restore in place): the branch's next WAL
    goes into a new generation that continues `base` below `point` (its own
    history only, when the point is unknown). The caller stores branch.wal_gen
    (and fork) on the dataset."""
    branch.wal_gen = generation(branch) + 1
    start, (base_branch, base_gen) = (point.low, base) if point is not None else (0, ("", 0))
    repository(config).begin(Generation(branch.id, branch.wal_gen, start, base_branch, base_gen,
                                        db.id, db.name, branch.name, time.time(),
                                        point.time if point is not None else 0.0))


def drop_spool(config: AgentConfig, branch: BranchRecord) -> None:
    """Called when the branch is deleted: its spooled WAL goes into the
    repository, and its spool directory goes (blocking)."""
    try:
        spool.drop_branch(spool_root(config), repository(config), branch.id)
    except OSError as exc:  # the deletion goes on; the directory stays for a look
        log.error("could not empty the WAL spool of branch %s: %s", branch.id, exc)


def archive_settings(config: AgentConfig, db: DatabaseRecord, branch: BranchRecord
                     ) -> ArchiveSettings | None:
    """The archive_* lines of the branch's cygnet.conf; None when it does not archive."""
    if not enabled(db, branch):
        return None
    ensure_generation(config, db, branch)
    directory = spool.spool_dir(spool_root(config), branch.id, generation(branch))
    directory.mkdir(parents=True, exist_ok=True)
    user = postgres_user()
    for d in (directory, directory.parent, directory.parent.parent):
        os.chown(d, user.uid, user.gid)
    directory.chmod(0o700)
    command = (f"'{PROGRAM}' archive '{directory}' {config.wal_spool_max_bytes} "
               "'%p' '%f'")
    return ArchiveSettings(command=command, timeout_s=config.wal_archive_timeout)


class Archiver:
    """Ingests every branch's spool into the repository, and reports the backlog."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.root = spool_root(config)
        self.repo = repository(config)
        self.ingested = 0
        self.failures = 0
        self.last_error = ""
        self._wake = asyncio.Event()

    def poke(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        # Imported here: offsite's imports reach the branch flows, which import
        # the clusters layer, which imports this module.
        from cygnet.agent import offsite

        while not stop.is_set():
            try:
                stored = await asyncio.to_thread(spool.ingest, self.root, self.repo)
                self.ingested += stored
                if stored:
                    offsite.poke()  # off-host now, not at the uploader's next look
                self.last_error = ""
            except Exception as exc:  # a full or missing repository: retried, and alerted
                self.failures += 1
                if str(exc) != self.last_error:
                    log.error("WAL ingestion failed (retrying): %s", exc)
                self.last_error = str(exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.wal_ingest_interval)

    def metrics(self) -> list[Metric]:
        now = time.time()
        backlog = spool.backlog(self.root)
        lag_bytes = GaugeMetricFamily(
            "cygnet_wal_archive_lag_bytes",
            "Bytes of WAL handed to archive_command and not yet in the local repository",
            labels=["branch_id"])
        lag_seconds = GaugeMetricFamily(
            "cygnet_wal_archive_lag_seconds",
            "Age of the oldest spooled WAL file not yet in the local repository",
            labels=["branch_id"])
        fill = GaugeMetricFamily(
            "cygnet_wal_spool_fill_ratio",
            "Spooled bytes over wal_spool_max_bytes; at 1 archive_command fails",
            labels=["branch_id"])
        for branch_id, b in backlog.items():
            lag_bytes.add_metric([branch_id], float(b.bytes))
            lag_seconds.add_metric([branch_id], b.lag_seconds(now))
            fill.add_metric([branch_id], b.bytes / max(1, self.config.wal_spool_max_bytes))
        total = GaugeMetricFamily("cygnet_wal_archive_backlog_bytes",
                                  "Bytes of WAL in the local spool, all branches")
        total.add_metric([], float(sum(b.bytes for b in backlog.values())))
        up = GaugeMetricFamily("cygnet_wal_ingest_up", "1 when the last spool ingestion worked")
        up.add_metric([], 0.0 if self.last_error else 1.0)
        return [lag_bytes, lag_seconds, fill, total, up]


_current: Archiver | None = None


def start(config: AgentConfig) -> Archiver:
    global _current
    _current = Archiver(config)
    return _current


def poke() -> None:
    if _current is not None:
        _current.poke()


def metrics() -> list[Metric]:
    return _current.metrics() if _current is not None else []
