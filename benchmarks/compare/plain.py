"""A plain PostgreSQL cluster on a dataset of the benchmark pool, run as the postgres user.

The non-Cygnet methods run against it, so every method writes to the same
zfs-fuse pool. Settings are Postgres defaults (what people use today), apart
from the port and a private socket directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.common import wait_query
from cygnet.postgres.layout import postgres_user

BINDIR = Path("/usr/lib/postgresql/15/bin")


def as_postgres(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Runs a Postgres tool as the postgres OS user (Postgres refuses root)."""
    user = postgres_user()
    return subprocess.run(argv, user=user.uid, group=user.gid, extra_groups=[], cwd="/",
                          capture_output=True, text=True, check=True, **kwargs)


def chown_postgres(path: Path) -> None:
    user = postgres_user()
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, user.uid, user.gid)


@dataclass
class PlainCluster:
    """One data directory below `root`; its socket lives in `root`/sock."""

    root: Path
    port: int
    # Another major's binaries (the PostgreSQL 18 baseline), and `-c` settings.
    bindir: Path = BINDIR
    options: tuple[str, ...] = ()

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.sockdir} port={self.port} user=postgres dbname={dbname}"

    def initdb(self) -> None:
        chown_postgres(self.root)
        as_postgres([str(self.bindir / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                     "--auth-local=trust", "--auth-host=reject", "-E", "UTF8",
                     "--locale=C.UTF-8"], timeout=300)

    def start(self, timeout: float = 600.0) -> None:
        """Starts detached and waits for the first answered query."""
        chown_postgres(self.sockdir)
        user = postgres_user()
        log = self.root / "postgres.log"
        with open(log, "ab") as out:
            os.chown(log, user.uid, user.gid)
            subprocess.Popen([str(self.bindir / "postgres"), "-D", str(self.pgdata),
                              "-p", str(self.port), "-k", str(self.sockdir),
                              "-c", "listen_addresses=",
                              *[arg for opt in self.options for arg in ("-c", opt)]],
                             user=user.uid, group=user.gid, extra_groups=[], cwd="/",
                             stdout=out, stderr=out, start_new_session=True)
        wait_query(self.conninfo(), timeout=timeout)

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo(dbname), autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        """Fast shutdown; an already-stopped cluster is fine."""
        if (self.pgdata / "postmaster.pid").exists():
            subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "stop",
                            "-m", "fast", "-t", "60"], user=postgres_user().uid,
                           capture_output=True, cwd="/", timeout=120)

    def remove(self) -> None:
        self.stop()
        # A just-exited postmaster may still hold files for a moment.
        for _ in range(20):
            shutil.rmtree(self.root, ignore_errors=True)
            if not self.root.exists():
                return
            time.sleep(0.1)
