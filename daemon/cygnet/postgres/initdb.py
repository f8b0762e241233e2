"""Creating a new cluster with initdb (done once per pool and version for the template)."""

from __future__ import annotations

import logging
from pathlib import Path

from cygnet.errors import FailedPrecondition, InternalError
from cygnet.postgres import _cmd, _fs
from cygnet.postgres.config import ensure_include, write_access_rules
from cygnet.postgres.layout import SUPERUSER_ROLE

log = logging.getLogger(__name__)

INITDB_TIMEOUT = 300.0


def initdb_argv(bindir: Path, pgdata: Path, checksums: bool | None = None,
                sync: bool = True) -> list[str]:
    """The initdb command line: superuser postgres, peer/scram auth, UTF-8, C.UTF-8 locale.

    `checksums` None keeps the major's default (off up to 17, on from 18);
    pg_upgrade needs the new cluster to match the old one. `sync` False skips
    initdb's fsync of every file (pg_upgrade syncs the result itself).
    """
    flags = {None: [], True: ["--data-checksums"], False: ["--no-data-checksums"]}[checksums]
    return [
        str(bindir / "initdb"),
        "--pgdata", str(pgdata),
        "--username", SUPERUSER_ROLE,
        "--auth-local=peer",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C.UTF-8",
        "--no-instructions",
        *flags,
        *([] if sync else ["--no-sync"]),
    ]


async def init_cluster(bindir: Path, pgdata: Path, log_path: Path,
                       checksums: bool | None = None, sync: bool = True) -> None:
    """Runs initdb into `pgdata` as postgres, then installs Cygnet's config hooks.

    Creates pgdata (postgres, 0700) and the log file's dir and file (postgres);
    `pgdata` must be missing or empty. Appends the include of cygnet.conf to
    postgresql.conf and writes pg_hba.conf/pg_ident.conf (no trust; TCP only
    over TLS). initdb makes no certificate or key: TLS files live outside
    pgdata and write_settings names them. Leaves a
    cleanly shut-down cluster without cygnet.conf: write_settings (or
    prepare_clone on a clone of it) comes before the first start. Raises
    InternalError with initdb's stderr if it fails.
    """
    if pgdata.exists() and any(pgdata.iterdir()):
        raise FailedPrecondition(f"{pgdata} is not empty")
    _fs.ensure_postgres_dir(pgdata)
    _fs.ensure_postgres_dir(log_path.parent, mode=0o750)
    _fs.ensure_postgres_file(log_path)
    argv = initdb_argv(bindir, pgdata, checksums, sync)
    result = await _cmd.run(argv, timeout=INITDB_TIMEOUT, as_postgres=True)
    if result.returncode != 0:
        raise InternalError(f"initdb failed (rc={result.returncode}): {result.stderr.strip()}")
    log.info("initdb'd %s", pgdata)
    ensure_include(pgdata)
    write_access_rules(pgdata)
