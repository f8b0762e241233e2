"""Where a snapshot's WAL ends, recorded as `cygnet:wal-point` (wal/points.py).

A crash-consistent snapshot can serve recovery targets only at or after the
end of the WAL it holds. That end cannot be read exactly, so it is bracketed:
the insert LSN just before `zfs snapshot` (on the CHECKPOINT's connection)
and just after it. Children record their branch point's as `cygnet:fork`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from cygnet.agent import archive
from cygnet.agent import layout as L
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, SnapshotRecord
from cygnet.errors import CygnetError
from cygnet.postgres import sql
from cygnet.postgres.versions import resolve_version
from cygnet.wal import records
from cygnet.wal.lsn import SEGMENT_SIZE, format_lsn, parse_lsn
from cygnet.wal.points import WalPoint

_LSN = "SELECT pg_current_wal_insert_lsn()::text"
# Points of snapshots taken by this daemon, for the clone that follows at once.
_recent: OrderedDict[str, WalPoint] = OrderedDict()
# Each running branch's insert LSN just after its last CHECKPOINT here, by branch id.
_checkpointed: OrderedDict[str, int] = OrderedDict()


@dataclass
class Probe:
    subscriptions: int = -1  # -1: the branch is not running
    point: WalPoint | None = None


@contextlib.asynccontextmanager
async def around_snapshot(host: Host, branch: BranchRecord) -> AsyncIterator[Probe]:
    """CHECKPOINT, count subscriptions and read the insert LSN on one connection;
    the body takes the snapshot; then the LSN is read again."""
    probe = Probe()
    if host.clusters.live(branch) is None:
        # Nothing writes while it is stopped: its shutdown checkpoint is its end.
        await host.mount_branch(branch)  # a parked branch: pg_control is on its dataset
        probe.point = await _clean_stop_point(host, branch)
        yield probe
        return
    socket_dir = host.clusters.socket_dir(branch)
    async with await sql.connect(socket_dir, branch.port) as conn:
        checkpointed = await _checkpoint_if_moved(conn, host, branch)
        cur = await conn.execute(f"SELECT count(*), ({_LSN}) FROM pg_subscription")
        row = await cur.fetchone()
        probe.subscriptions = int(row[0]) if row else 0
        low = parse_lsn(row[1]) if row else 0
        if checkpointed:
            _remember(_checkpointed, branch.id, low)
        yield probe
        cur = await conn.execute(_LSN)
        high_row = await cur.fetchone()
        if row and high_row:
            probe.point = WalPoint(low, parse_lsn(high_row[0]), time.time())


async def _checkpoint_if_moved(conn: psycopg.AsyncConnection[Any], host: Host,
                               branch: BranchRecord) -> bool:
    """A CHECKPOINT, unless nothing but a forced segment switch was written since
    the branch's last one here.

    The CHECKPOINT only shortens the clone's crash recovery. Each one writes a
    WAL record, and with archive_timeout that record forces a segment switch
    two seconds later: 16 MiB of padding written on an otherwise idle
    database, and on zfs-fuse the next snapshot of it may wait a second."""
    last = _checkpointed.get(branch.id)
    if last is not None:  # else nothing to compare: no round trip for the LSN
        cur = await conn.execute(_LSN)
        row = await cur.fetchone()
        if row is not None and await _unmoved_since(
                conn, host.clusters.pgdata(branch), last, parse_lsn(row[0])):
            return False
    await conn.execute("CHECKPOINT")
    return True


async def _unmoved_since(conn: psycopg.AsyncConnection[Any], pgdata: Path, last: int,
                         now: int) -> bool:
    """Whether the WAL from `last` to `now` is at most one segment switch (its record
    at `last`, then the next segment, empty)."""
    if now == last:
        return True
    if now != records.next_segment_start(last, SEGMENT_SIZE) or last % records.PAGE_SIZE == 0:
        return False  # (at a page's start the record would follow the page header)
    cur = await conn.execute(
        "SELECT file_name, file_offset FROM pg_walfile_name_offset(%s::pg_lsn)",
        (format_lsn(last),))
    row = await cur.fetchone()
    return row is not None and await asyncio.to_thread(
        records.is_switch_at, pgdata / "pg_wal" / row[0], int(row[1]))


def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > 256:
        cache.popitem(last=False)


async def record(host: Host, snapshot: str, point: WalPoint | None) -> None:
    if point is None:
        return
    _remember(_recent, snapshot, point)
    await host.zfs.set_props(snapshot, {L.P_WAL_POINT: point.text()})


_CHECKPOINT = re.compile(r"^Latest checkpoint location:\s+([0-9A-F]+/[0-9A-F]+)", re.MULTILINE)
_STATE = re.compile(r"^Database cluster state:\s+(.+)$", re.MULTILINE)


async def stopped_point(host: Host, db: DatabaseRecord, branch: BranchRecord
                        ) -> WalPoint | None:
    """Where a cleanly stopped branch's WAL ends: its shutdown checkpoint."""
    return await _controldata_point(host.clusters.bindir(db, branch),
                                    host.clusters.pgdata(branch), clean_only=False)


async def _clean_stop_point(host: Host, branch: BranchRecord) -> WalPoint | None:
    """stopped_point for a branch known only by its data dir (its major from
    PG_VERSION); None unless it was shut down cleanly (after a crash, WAL past
    the last checkpoint may follow, and its end is unknown)."""
    pgdata = host.clusters.pgdata(branch)
    try:
        major = (pgdata / "PG_VERSION").read_text(encoding="ascii").strip()
        bindir = resolve_version(major, host.config.postgres_root)[1]
    except (OSError, CygnetError):
        return None
    return await _controldata_point(bindir, pgdata, clean_only=True)


async def _controldata_point(bindir: Path, pgdata: Path, clean_only: bool) -> WalPoint | None:
    proc = await asyncio.create_subprocess_exec(
        str(bindir / "pg_controldata"), "-D", str(pgdata),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env={"LC_ALL": "C"})
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    found = _CHECKPOINT.search(text)
    state = _STATE.search(text)
    if not found or (clean_only and (state is None or state.group(1).strip() != "shut down")):
        return None
    lsn = parse_lsn(found.group(1))
    return WalPoint(lsn, lsn + 512, time.time())  # a checkpoint record is ~100 bytes


async def adopt(host: Host, db: DatabaseRecord, branch: BranchRecord, source: BranchRecord
                ) -> None:
    """`branch` is about to take `source`'s (stopped) data through a swap (a promote):
    its archive goes on in a new generation that continues `source`'s history."""
    archive.ensure_generation(host.config, db, source)
    point = await stopped_point(host, db, source)
    if db.version_of(source) != db.version_of(branch):
        point = None  # pg_upgrade's new cluster: its WAL continues no archived history
    archive.rewind(host.config, db, branch, point, (source.id, archive.generation(source)))
    await host.zfs.set_props(source.dataset, {L.P_WAL_GEN: str(branch.wal_gen)})


def point_of(snapshot: str, record: SnapshotRecord | None = None) -> WalPoint | None:
    if record is not None and record.wal_point:
        return WalPoint.parse(record.wal_point)
    return _recent.get(snapshot)


def fork_value(parent: BranchRecord, snapshot: str, record: SnapshotRecord | None = None
               ) -> str:
    """`cygnet:fork` of a child cloned from `snapshot` of `parent` ("" if unknown)."""
    point = point_of(snapshot, record)
    return f"{parent.wal_gen or 1}:{point.text()}" if point is not None else ""
