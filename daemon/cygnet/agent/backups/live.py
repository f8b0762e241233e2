"""Backing up a running branch from its live data directory, as pgBackRest does.

A fresh ZFS clone is read through zfs-fuse with a cold page cache (`cat` of
a 4.2 GB clone: 8-22 s), while the branch's own files are warm (0.9 s). So a
running branch is read in place, between pg_backup_start and pg_backup_stop
(a non-exclusive backup on one session, which Postgres ends if we die):

- a temporary physical replication slot, made first on the same session,
  holds the WAL from before the backup's checkpoint until the session ends;
- pg_backup_start(fast) checkpoints; every page written from then on is
  logged in full, so a torn read is repaired by replay;
- the data directory is read with what a restore must not get left out
  (SKIP: postmaster.pid, the contents of pg_wal and of the runtime
  directories, pg_internal.init, temporary files);
- pg_backup_stop returns backup_label. The WAL segments from the backup's
  start to its stop (and the timeline history files) are then stored under
  pg_wal/, and backup_label at the top, so a restored image recovers to a
  consistent state on its own: no archive needed, as with
  `pg_basebackup -X fetch`.

Only the WAL the backup needs is stored, not the recycled segments a data
directory carries (1.8 GB of the 4.2 GB after a pgbench load).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from cygnet.backup.manifest import Entry
from cygnet.backup.models import Metadata
from cygnet.backup.tree import SourceItem
from cygnet.errors import Aborted
from cygnet.postgres import sql

# Directories whose contents are runtime state, rebuilt at start (as pg_basebackup).
EMPTIED = frozenset({"pg_wal", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots",
                     "pg_stat_tmp", "pg_subtrans", "pg_replslot"})
TOP_FILES = frozenset({"postmaster.pid", "postmaster.opts", "backup_label", "backup_label.old",
                       "tablespace_map", "tablespace_map.old", "backup_manifest"})
SEGMENT = re.compile(r"[0-9A-F]{24}")
HISTORY = re.compile(r"[0-9A-F]{8}\.history")


class LiveUnavailable(Exception):
    """The cluster cannot take an online backup now (e.g. wal_level = minimal, no
    free replication slot): the caller reads a snapshot instead."""


def skip(rel: str, is_dir: bool) -> bool:
    parent, _, name = rel.rpartition("/")
    if parent in EMPTIED:
        return True
    if not parent and name in TOP_FILES:
        return True
    return name == "pg_internal.init" or name.startswith("pgsql_tmp")


def wal_items(pgdata: Path, first: str, last: str) -> list[SourceItem]:
    """Segments first..last of their timeline, and every timeline history file."""
    wal = pgdata / "pg_wal"
    items = []
    for name in sorted(os.listdir(wal)):
        wanted = ((SEGMENT.fullmatch(name) and name[:8] == first[:8] and first <= name <= last)
                  or HISTORY.fullmatch(name))
        if not wanted:
            continue
        st = os.stat(wal / name)
        items.append(SourceItem(wal / name, Entry(f"pg_wal/{name}", "file", st.st_mode & 0o7777,
                                                  st.st_mtime_ns, size=st.st_size)))
    missing = {first, last} - {i.entry.path.removeprefix("pg_wal/") for i in items}
    if missing:  # the slot keeps them: their absence means something else went wrong
        raise RuntimeError(f"WAL segment {min(missing)} is missing from {wal}")
    return items


class LiveBackup:
    """One non-exclusive backup of a running cluster; `async with` ends it."""

    def __init__(self, socket_dir: Path, port: int, pgdata: Path) -> None:
        self.socket_dir = socket_dir
        self.port = port
        self.pgdata = pgdata
        self.subscriptions = 1
        self.started_at = 0.0
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._first = ""
        self._tmp = Path(tempfile.mkdtemp(prefix="cygnet-label-"))

    async def __aenter__(self) -> LiveBackup:
        try:
            await self._start()
        except (psycopg.Error, Aborted) as exc:
            await self.__aexit__(None, None, None)
            raise LiveUnavailable(str(exc).strip() or type(exc).__name__) from exc
        return self

    async def _start(self) -> None:
        self._conn = conn = await sql.connect(self.socket_dir, self.port)
        slot = f"cygnet_backup_{secrets.token_hex(6)}"
        await conn.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", (slot,))
        cur = await conn.execute("SELECT count(*) FROM pg_subscription")
        row = await cur.fetchone()
        self.subscriptions = int(row[0]) if row else 1
        cur = await conn.execute(
            "SELECT pg_walfile_name(lsn) FROM pg_backup_start('cygnet', true) AS lsn")
        row = await cur.fetchone()
        assert row is not None
        self._first = str(row[0])
        self.started_at = time.time()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._conn is not None:
            # Closing the session aborts a backup still in progress and drops the slot.
            await self._conn.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    async def stop(self) -> tuple[list[SourceItem], Metadata]:
        """pg_backup_stop; the WAL it needs and backup_label, as files to store."""
        assert self._conn is not None
        cur = await self._conn.execute(
            "SELECT labelfile, pg_walfile_name(lsn) FROM pg_backup_stop(false)")
        row = await cur.fetchone()
        assert row is not None
        label, last = str(row[0]), str(row[1])
        # A commit flushes the WAL up to and with the backup's end record.
        await self._conn.execute("SELECT pg_current_xact_id()")
        stopped_at = time.time()
        items = await asyncio.to_thread(wal_items, self.pgdata, self._first, last)
        path = self._tmp / "backup_label"
        path.write_text(label)
        st = path.stat()
        items.append(SourceItem(path, Entry("backup_label", "file", 0o600, st.st_mtime_ns,
                                            size=st.st_size)))
        return items, {"snapshot_at": round(stopped_at, 3), "live": True}
