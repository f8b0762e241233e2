"""Point-in-time recovery of a clone: stage archived WAL, replay to a target, promote.

Used by point-in-time branches, restore in place and database restores
(agent/pitr.py). The clone is a crash-consistent snapshot; Postgres replays
its own pg_wal, then asks `cygnet-wal restore` for each further file, which
hard-links it from a staging directory beside pgdata (same dataset). The
staging runs in a worker thread while Postgres replays, in LSN order, so
recovery starts at once and never waits for more than the next file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from cygnet.agent import archive
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.errors import Aborted, InvalidArgument
from cygnet.postgres import fixup, process
from cygnet.postgres.config import ClusterSettings, RecoverySettings, write_settings
from cygnet.postgres.layout import postgres_user
from cygnet.postgres.sizes import SizeClass
from cygnet.postgres.sql import connect
from cygnet.wal.lsn import format_lsn, parse_lsn, segment
from cygnet.wal.plan import Stager
from cygnet.wal.repo import WalObject

log = logging.getLogger("cygnet.agent")

RECOVERY_TIMEOUT = 3600.0  # replay of a long window; the caller's deadline is its own
STAGE_DIR = "wal-restore"
PAUSE_POLL = 0.05
# Postgres' log line when the replay pauses at its target (recoveryPausesHere).
_AT_TARGET = "pausing at the end of recovery"
_NOT_REACHED = "recovery ended before configured recovery target was reached"


class PausedEarly(Exception):
    """The hot standby replay paused short of its target (not promoted). Not an
    Aborted: _promote_at_target retries on those (a server not accepting yet)."""


@dataclass(frozen=True)
class Target:
    """A recovery target: a time (unix seconds), an LSN, or neither (all archived WAL)."""

    time: float = 0.0
    lsn: int = 0

    def describe(self) -> str:
        if self.time:
            return datetime.fromtimestamp(self.time, UTC).isoformat(sep=" ")
        return format_lsn(self.lsn) if self.lsn else "the latest archived point"


def _settings(stage: Path, target: Target | None) -> RecoverySettings:
    command = f"'{archive.PROGRAM}' restore '{stage}' '%f' '%p'"
    if target is None or not (target.time or target.lsn):
        return RecoverySettings(restore_command=command)
    if target.time:
        return RecoverySettings(command, target_time=Target(time=target.time).describe())
    return RecoverySettings(command, target_lsn=format_lsn(target.lsn))


def replay_size(shared_buffers_mb: int, size: SizeClass) -> SizeClass:
    """`size` with at least `shared_buffers_mb` of buffers (recovery_shared_buffers_mb)."""
    if shared_buffers_mb <= size.shared_buffers_mb:
        return size
    return replace(size, shared_buffers_mb=shared_buffers_mb)


async def recover(host: Host, db: DatabaseRecord, branch: BranchRecord,
                  objects: list[WalObject], target: Target, *, workers: bool = True) -> int:
    """Replays `branch`'s fresh clone to `target` and promotes it; returns the LSN
    where its own history starts (the new timeline's switch point).

    `branch` says where the clone is (dataset), and which port and socket
    directory it may use while it recovers. The postmaster is left running,
    without archiving; `workers` off keeps inherited subscriptions from
    starting.
    """
    files = host.clusters.files(branch)
    stage = files.mount / STAGE_DIR
    shutil.rmtree(stage, ignore_errors=True)
    user = postgres_user()
    stager = Stager(stage, objects, user.uid, user.gid)
    stager.prepare()
    staging = asyncio.create_task(asyncio.to_thread(stager.run))
    try:
        settings = host.clusters.settings(branch, db, workers=workers)
        settings = replace(settings, recovery=_settings(stage, target), archive=None,
                           size=replay_size(host.config.recovery_shared_buffers_mb,
                                            settings.size))
        fixup.prepare_clone(files.pgdata, files.log_file, settings)
        (files.pgdata / "recovery.signal").touch()
        try:
            await _replay(host, db, branch, settings, target)
        except Aborted as exc:
            if _NOT_REACHED not in _log_text(files.log_file):
                raise
            # No commit after the target in the archive: all WAL up to the
            # target is there (the window was checked), so its end is the target.
            log.info("branch %s: no commit after %s in the archive; recovering to its end "
                     "(%s)", branch.id, target.describe(), exc)
            write_settings(files.pgdata, replace(settings, recovery=_settings(stage, None)))
            await _start(host, db, branch)
    finally:
        stager.cancelled.set()
        await staging
        shutil.rmtree(stage, ignore_errors=True)
    if stager.error is not None:
        raise Aborted(f"reading archived WAL failed: {stager.error}")
    redo = re.findall(r"redo done at \S+ system usage: .*elapsed: ([0-9.]+) s",
                      _log_text(files.log_file))
    log.info("branch %s: staged %d of %d WAL files (%.0f MB) in %.2fs; Postgres' redo %s s",
             branch.id, stager.staged, len(objects), stager.staged_bytes / 1e6, stager.seconds,
             redo[-1] if redo else "?")
    return switch_point(files.pgdata)


async def _replay(host: Host, db: DatabaseRecord, branch: BranchRecord,
                  settings: ClusterSettings, target: Target) -> None:
    """Starts the recovery `settings` describe and sees it promoted at `target`."""
    files = host.clusters.files(branch)
    mark = _log_size(files.log_file)
    await _start(host, db, branch)
    if not (target.time or target.lsn) or settings.recovery is None:
        return
    try:
        await _promote_at_target(host, branch, mark)
    except PausedEarly as exc:
        # Hot standby cannot replay this WAL (settings raised after the snapshot):
        # the replay goes on as a plain recovery, promoted by Postgres at the target.
        log.info("branch %s: %s; replaying on without hot standby", branch.id, exc)
        await host.clusters.stop(branch, "fast")
        recovery = replace(settings.recovery, promote_at_target=True)
        write_settings(files.pgdata, replace(settings, recovery=recovery))
        await _start(host, db, branch)


async def _start(host: Host, db: DatabaseRecord, branch: BranchRecord) -> None:
    files = host.clusters.files(branch)
    await process.start(host.clusters.bindir(db, branch), files.pgdata, files.log_file,
                        timeout=RECOVERY_TIMEOUT)


async def _promote_at_target(host: Host, branch: BranchRecord, log_mark: int) -> None:
    """Waits until the replay pauses at its target, then promotes it (pg_promote, see
    postgres/config.py). Aborted if the postmaster stops first, e.g. when the archive
    ends before the target (the caller reads the log for that); PausedEarly if the
    replay paused anywhere else (a hot standby pauses on insufficient parameter
    settings): promoting there would silently lose what lies before the target."""
    socket_dir = host.clusters.socket_dir(branch)
    log_file = host.clusters.files(branch).log_file
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while time.monotonic() < deadline:
        if host.clusters.live(branch) is None:
            raise Aborted("the postmaster stopped before the replay reached its target: "
                          + _last_line(_log_text(log_file)))
        with contextlib.suppress(Aborted, psycopg.Error):  # not accepting connections
            async with await connect(socket_dir, branch.port) as conn:
                if not await _until_paused(conn, deadline):
                    break
                since = _log_since(log_file, log_mark)
                if _AT_TARGET not in since:
                    raise PausedEarly("the replay paused before its target: "
                                      + _last_line(since))
                await conn.execute("SELECT pg_catalog.pg_promote(true, 3600)")
                return
        await asyncio.sleep(PAUSE_POLL)
    raise Aborted(f"the replay did not reach its target within {RECOVERY_TIMEOUT:g}s")


async def _until_paused(conn: psycopg.AsyncConnection[Any], deadline: float) -> bool:
    """True once the replay is paused; False at `deadline`."""
    while time.monotonic() < deadline:
        cur = await conn.execute("SELECT pg_catalog.pg_get_wal_replay_pause_state()")
        row = await cur.fetchone()
        if row is not None and row[0] == "paused":
            return True
        await asyncio.sleep(PAUSE_POLL)
    return False


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no log)"


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _log_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-20000:]
    except OSError:
        return ""


def switch_point(pgdata: Path) -> int:
    """Where the newest timeline begins: the last line of its history file."""
    histories = sorted((pgdata / "pg_wal").glob("*.history"))
    if not histories:
        raise Aborted("recovery promoted no new timeline (no history file)")
    lines = [ln for ln in histories[-1].read_text().splitlines() if ln.strip()
             and not ln.startswith("#")]
    try:
        return parse_lsn(lines[-1].split()[1])
    except (IndexError, InvalidArgument) as exc:
        raise Aborted(f"unreadable timeline history {histories[-1].name}") from exc


def mark_for_archive(pgdata: Path, since: int) -> int:
    """Queues the new timeline's history file and finished segments for archiving.

    They were written while archiving was off (the recovery start); the
    archiver takes files with a `.ready` status. Returns how many."""
    wal = pgdata / "pg_wal"
    histories = sorted(wal.glob("*.history"))
    if not histories:
        return 0
    timeline = int(histories[-1].name.split(".")[0], 16)
    status = wal / "archive_status"
    names = [histories[-1].name]
    segs = sorted((s for s in (segment(p.name) for p in wal.iterdir())
                   if s is not None and s.timeline == timeline and s.end > since),
                  key=lambda s: s.start)
    names += [s.name for s in segs[:-1]]  # the last one is still being written
    user = postgres_user()
    for name in names:
        ready = status / f"{name}.ready"
        if not (status / f"{name}.done").exists():
            ready.touch()
            shutil.chown(ready, user.uid, user.gid)
    return len(names)
