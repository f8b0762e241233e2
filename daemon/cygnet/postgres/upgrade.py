"""Major-version upgrade of a cleanly stopped cluster in place, with pg_upgrade --link.

The data dir is upgraded where it lies (on a branch's own ZFS clone): the old
data dir moves aside, initdb makes the new one next to it, and pg_upgrade
--link hard-links the relation files into it, so the cost does not grow with
the data. --clone would need FICLONE, which zfs-fuse lacks; --link is as
cheap here and the old cluster is thrown away anyway. The result has a new
system identifier: a new WAL lineage for archives and replicas.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from cygnet.errors import FailedPrecondition, InternalError
from cygnet.postgres import _cmd, _fs
from cygnet.postgres.initdb import init_cluster
from cygnet.postgres.layout import SUPERUSER_ROLE, postgres_user
from cygnet.postgres.sql import connect, query_all

log = logging.getLogger(__name__)

UPGRADE_TIMEOUT = 3600.0
TOOL_TIMEOUT = 30.0
# Settings files that belong to the data, not to the binaries: ALTER SYSTEM's
# and the branch's own (cygnet.user.conf). initdb makes neither.
CARRIED_FILES = ("postgresql.auto.conf", "cygnet.user.conf")
# pg_upgrade prints one line per check: "Checking for ...   ok".
_CHECK = re.compile(r"^(Checking .*?)\s+(ok|failed|fatal|warning)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class UpgradeResult:
    checks: list[str]  # pg_upgrade's checks with their outcome, in order
    seconds: float  # initdb plus pg_upgrade
    old_system_identifier: str
    new_system_identifier: str


async def control_data(bindir: Path, pgdata: Path) -> dict[str, str]:
    """pg_controldata's fields, e.g. "Database cluster state" and "Database system identifier"."""
    result = await _cmd.run([str(bindir / "pg_controldata"), "-D", str(pgdata)],
                            timeout=TOOL_TIMEOUT, as_postgres=True)
    if result.returncode != 0:
        raise InternalError(f"pg_controldata failed: {result.stderr.strip()}")
    fields = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


async def available_extensions(bindir: Path) -> set[str]:
    """Extensions a major's binaries can create (the .control files in its share dir)."""
    result = await _cmd.run([str(bindir / "pg_config"), "--sharedir"], timeout=TOOL_TIMEOUT)
    if result.returncode != 0:
        raise InternalError(f"pg_config --sharedir failed: {result.stderr.strip()}")
    share = Path(result.stdout.strip()) / "extension"
    return {p.name.removesuffix(".control") for p in share.glob("*.control")}


async def installed_extensions(socket_dir: Path, port: int) -> dict[str, list[str]]:
    """Extension -> databases it is created in, over every database that allows connections."""
    databases = await query_all(socket_dir, port, "SELECT datname FROM pg_database"
                                " WHERE datallowconn ORDER BY 1")
    found: dict[str, list[str]] = {}
    for (dbname,) in databases:
        async with await connect(socket_dir, port, dbname) as conn:
            cur = await conn.execute("SELECT extname FROM pg_extension ORDER BY 1")
            for (ext,) in await cur.fetchall():
                found.setdefault(ext, []).append(dbname)
    return found


# Column options that newer minor releases of an old major set and that a new
# major's binaries may not know yet: Debian's 15.20 stamps every column with
# `pg_attver`, which PostgreSQL 16.15, 17.11 and 18.6 refuse ("unrecognized
# parameter"), so pg_upgrade's schema restore fails.
MINOR_RELEASE_OPTIONS = ("pg_attver",)

# An ALTER ... RESET does not remove it (the server stamps it again), so the
# catalog is edited directly, as a superuser, on the throwaway clone only.
_RESET_OPTION = """
UPDATE pg_catalog.pg_attribute
SET attoptions = NULLIF(ARRAY(SELECT o FROM unnest(attoptions) o
                              WHERE o NOT LIKE {prefix}), '{{}}')
WHERE EXISTS (SELECT 1 FROM unnest(attoptions) o WHERE o LIKE {prefix})"""


def options_unknown_to(new_bin: Path) -> list[str]:
    """Of MINOR_RELEASE_OPTIONS, those the new major's server does not know."""
    try:
        binary = (new_bin / "postgres").read_bytes()
    except OSError:
        return list(MINOR_RELEASE_OPTIONS)
    return [o for o in MINOR_RELEASE_OPTIONS if o.encode() not in binary]


async def reset_column_options(socket_dir: Path, port: int, options: list[str]) -> None:
    """Resets `options` on every column of every database of the running clone (a
    throwaway copy: the branch being upgraded), so the new major can restore it."""
    if not options:
        return
    databases = await query_all(socket_dir, port, "SELECT datname FROM pg_database"
                                " WHERE datallowconn ORDER BY 1")
    for (dbname,) in databases:
        async with await connect(socket_dir, port, dbname) as conn:
            for option in options:
                await conn.execute(sql.SQL(_RESET_OPTION).format(
                    prefix=sql.Literal(option + "=%")))


def _checksums_flag(source: dict[str, str], target_major: int) -> bool | None:
    """initdb's checksum flag so that the new cluster matches the old one."""
    enabled = source.get("Data page checksum version", "0") != "0"
    if target_major >= 18:
        return None if enabled else False  # 18 turns them on by default
    return True if enabled else None


def _pg_upgrade_argv(old_bin: Path, new_bin: Path, old: Path, new: Path, port: int,
                     socket_dir: Path) -> list[str]:
    return [str(new_bin / "pg_upgrade"), "--old-bindir", str(old_bin),
            "--new-bindir", str(new_bin), "--old-datadir", str(old), "--new-datadir", str(new),
            "--link", "--old-port", str(port), "--new-port", str(port),
            "--socketdir", str(socket_dir), "--username", SUPERUSER_ROLE]


async def upgrade_cluster(old_bin: Path, new_bin: Path, target_major: int, pgdata: Path,
                          log_path: Path, port: int, socket_dir: Path) -> UpgradeResult:
    """Upgrades the cleanly stopped cluster at `pgdata` to `new_bin`'s major, in place.

    `port` and `socket_dir` are the branch's own (nobody else uses them while
    it is stopped). On failure raises FailedPrecondition with pg_upgrade's
    report, leaving the data dir unusable: the caller throws the clone away.
    """
    source = await control_data(old_bin, pgdata)
    if source.get("Database cluster state") != "shut down":
        raise FailedPrecondition(f"{pgdata} is not cleanly shut down "
                                 f"({source.get('Database cluster state', 'unknown state')})")
    started = time.monotonic()
    old, new = pgdata.with_name("pgdata.old"), pgdata.with_name("pgdata.new")
    for leftover in (old, new):
        shutil.rmtree(leftover, ignore_errors=True)
    pgdata.rename(old)
    await init_cluster(new_bin, new, log_path, _checksums_flag(source, target_major), sync=False)
    _fs.ensure_postgres_dir(socket_dir)
    argv = _pg_upgrade_argv(old_bin, new_bin, old, new, port, socket_dir)
    if target_major >= 17:
        # One syncfs() instead of an fsync per file: the cost stays size-independent.
        argv += ["--sync-method", "syncfs"]
    result = await _cmd.run(argv, timeout=UPGRADE_TIMEOUT, as_postgres=True, cwd=socket_dir)
    checks = [f"{m.group(1)}: {m.group(2).lower()}" for line in result.stdout.splitlines()
              if (m := _CHECK.match(line.strip()))]
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-12:])
        raise FailedPrecondition(f"pg_upgrade failed (rc={result.returncode}):\n{tail}")
    for name in CARRIED_FILES:
        if (old / name).is_file():
            shutil.copy2(old / name, new / name)
            user = postgres_user()
            os.chown(new / name, user.uid, user.gid)
    new.rename(pgdata)
    # --link: the new cluster owns the files now; the old one must never start again.
    shutil.rmtree(old, ignore_errors=True)
    for script in socket_dir.glob("delete_old_cluster.sh"):
        script.unlink()
    seconds = time.monotonic() - started
    target = await control_data(new_bin, pgdata)
    log.info("upgraded %s with pg_upgrade --link in %.1fs", pgdata, seconds)
    return UpgradeResult(checks, seconds, source.get("Database system identifier", ""),
                         target.get("Database system identifier", ""))
