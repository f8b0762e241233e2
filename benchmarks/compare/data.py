"""Test databases of a given size, generated with pgbench."""

from __future__ import annotations

import os
import subprocess

import psycopg

from benchmarks.compare.plain import BINDIR

# pgbench -i: one unit of scale is 100,000 accounts rows, about 15 MB with indexes.
MB_PER_SCALE = 15


def scale_for(megabytes: int) -> int:
    return max(1, round(megabytes / MB_PER_SCALE))


def pgbench_init(scale: int, host: str, port: int, dbname: str,
                 password: str | None = None) -> None:
    """pgbench -i with server-side generation (G): the rows never cross the socket."""
    env = dict(os.environ, PGPASSWORD=password or "")
    subprocess.run([str(BINDIR / "pgbench"), "-i", "-q", "-s", str(scale), "-I", "dtGvp",
                    "-h", host, "-p", str(port), "-U", "postgres", dbname],
                   env=env, capture_output=True, text=True, check=True, timeout=7200)


def checkpoint_and_size(conninfo: str, dbname: str) -> int:
    """CHECKPOINT (so copies start from flushed data) and pg_database_size in bytes."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("checkpoint")
        row = conn.execute("select pg_database_size(%s)", (dbname,)).fetchone()
    return int(row[0]) if row else 0
