"""Turning a fresh clone of a RUNNING cluster into an independent branch.

The clone carries its parent's state: a stale postmaster.pid, the parent's
port and socket dir, replication slots (which would pin WAL forever), WAL
archiving and standby settings, and subscriptions (catalog rows, handled
with SQL after a start with logical workers disabled). Its TLS settings and
pg_hba.conf are rewritten for the host it runs on (write_settings).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from psycopg import sql

from cygnet.postgres import _fs
from cygnet.postgres.config import ClusterSettings, write_settings
from cygnet.postgres.pidfile import PIDFILE
from cygnet.postgres.sql import connect, query_all

log = logging.getLogger(__name__)

# Settings a branch must not inherit through ALTER SYSTEM (postgresql.auto.conf).
STRIPPED_AUTO_SETTINGS = frozenset({
    "archive_command",
    "archive_mode",
    "archive_library",
    "restore_command",
    "primary_conninfo",
    "primary_slot_name",
    # A branch or replica of a primary with synchronous replicas must not wait for them.
    "synchronous_standby_names",
    # TLS and listening are the host's: a clone must not keep a parent's choice.
    "listen_addresses",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
})
REMOVED_FILES = (PIDFILE, "postmaster.opts", "standby.signal", "recovery.signal")


def strip_auto_conf(text: str) -> str:
    """postgresql.auto.conf text without the STRIPPED_AUTO_SETTINGS lines."""
    kept = []
    for line in text.splitlines(keepends=True):
        name = line.split("=", 1)[0].strip().lower()
        if name not in STRIPPED_AUTO_SETTINGS:
            kept.append(line)
    return "".join(kept)


def _remove_slots(pgdata: Path) -> int:
    slots = pgdata / "pg_replslot"
    if not slots.is_dir():
        return 0
    removed = 0
    for entry in slots.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    return removed


def disown_archive_status(pgdata: Path) -> int:
    """Marks the WAL files the source had not archived yet as done in the clone.

    They belong to the source's archive (which still takes them), never to the
    clone's: a child never writes its parent's WAL into its own archive, where
    it would shadow nothing but cost the spool. Returns how many.
    """
    status = pgdata / "pg_wal" / "archive_status"
    if not status.is_dir():
        return 0
    done = 0
    for ready in status.glob("*.ready"):
        ready.rename(ready.with_suffix(".done"))
        done += 1
    return done


def prepare_clone(pgdata: Path, log_path: Path, settings: ClusterSettings) -> None:
    """Fixes up a fresh clone before its first start (idempotent; also fine on a template).

    Removes postmaster.pid/.opts, standby.signal/recovery.signal and every
    replication slot; strips archive/restore/primary settings from
    postgresql.auto.conf; truncates the inherited log at `log_path`; writes
    the branch's own cygnet.conf (port, socket dir, size) and creates its
    socket dir. Subscriptions need a running server: see disable_subscriptions.
    """
    for name in REMOVED_FILES:
        _fs.remove_if_exists(pgdata / name)
    slots = _remove_slots(pgdata)
    disown_archive_status(pgdata)
    auto = pgdata / "postgresql.auto.conf"
    if auto.exists():
        text = auto.read_text(encoding="utf-8")
        stripped = strip_auto_conf(text)
        if stripped != text:
            _fs.atomic_write(auto, stripped)
    _fs.ensure_postgres_dir(log_path.parent, mode=0o750)
    _fs.ensure_postgres_file(log_path, truncate=True)
    write_settings(pgdata, settings)
    log.info("prepared clone %s: removed %d replication slot(s)", pgdata, slots)


async def disable_subscriptions(socket_dir: Path, port: int) -> int:
    """Disables every subscription and detaches it from its slot; returns how many.

    Run on a clone started with logical_workers_enabled=False, so no apply
    worker ever connects to the parent's publisher as if it were the parent.
    SET (slot_name = NONE) keeps a later DROP SUBSCRIPTION from dropping the
    parent's slot on the publisher.
    """
    databases = await query_all(
        socket_dir,
        port,
        "SELECT DISTINCT d.datname FROM pg_subscription s"
        " JOIN pg_database d ON d.oid = s.subdbid ORDER BY 1",
    )
    done = 0
    for (dbname,) in databases:
        async with await connect(socket_dir, port, dbname) as conn:
            cur = await conn.execute(
                "SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
                " WHERE d.datname = current_database()"
            )
            for (subname,) in await cur.fetchall():
                ident = sql.Identifier(subname)
                await conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
                await conn.execute(
                    sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident)
                )
                done += 1
    return done
