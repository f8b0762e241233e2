"""The alternatives people use today, run on a plain cluster on the same pool.

- CREATE DATABASE ... TEMPLATE with STRATEGY FILE_COPY and WAL_LOG (PG 15+);
- pg_dump | pg_restore into a fresh cluster (initdb + start counted);
- pg_basebackup into a new data directory, then start it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from benchmarks.common import wait_query
from benchmarks.compare.methods import PLAIN_DB, Copy, Source
from benchmarks.compare.plain import BINDIR, PlainCluster, chown_postgres
from cygnet.postgres.layout import postgres_user


def tool_version(tool: str) -> str:
    """e.g. "PostgreSQL 15.18" from `pg_dump (PostgreSQL) 15.18 (Debian ...)`."""
    out = subprocess.run([str(BINDIR / tool), "--version"], capture_output=True,
                         text=True, check=True).stdout.split()
    return f"PostgreSQL {out[2]}"


class CreateDatabaseCopy:
    """CREATE DATABASE cN TEMPLATE bench STRATEGY s, then a query on cN."""

    def __init__(self, strategy: str) -> None:
        self.strategy = strategy
        self.key = f"createdb_{strategy.lower()}"
        self.label = f"{tool_version('postgres')} CREATE DATABASE STRATEGY {strategy}"

    def copy(self, source: Source, index: int) -> Copy:
        return create_database_copy(source.plain, f"copy{index}", self.strategy)


def create_database_copy(plain: PlainCluster, name: str, strategy: str) -> Copy:
    """`CREATE DATABASE name TEMPLATE plain STRATEGY strategy`, timed until it answers."""
    started = time.perf_counter()
    plain.sql(f"create database {name} template {PLAIN_DB} strategy {strategy}")
    wait_query(plain.conninfo(name))
    seconds = time.perf_counter() - started

    def drop() -> None:
        plain.sql(f"drop database {name}")

    return Copy(seconds, drop, plain.conninfo(name))


class DumpRestore:
    """initdb + start a fresh cluster, then pg_dump -Fc | pg_restore -C into it."""

    key = "pg_dump_restore"

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir, self.port = workdir, port
        self.label = f"{tool_version('pg_dump')} pg_dump | pg_restore (new cluster)"

    def copy(self, source: Source, index: int) -> Copy:
        target = PlainCluster(self.workdir / f"dump{index}", self.port)
        started = time.perf_counter()
        target.initdb()
        target.start()
        fresh = time.perf_counter()
        pipe_dump_restore(source.plain, target)
        wait_query(target.conninfo(PLAIN_DB))
        done = time.perf_counter()
        return Copy(done - started, target.remove, target.conninfo(),
                    {"initdb_start_s": round(fresh - started, 4),
                     "dump_restore_s": round(done - fresh, 4)})


def pipe_dump_restore(source: PlainCluster, target: PlainCluster) -> None:
    user = postgres_user()
    dump = subprocess.Popen(
        [str(BINDIR / "pg_dump"), "-Fc", "-h", str(source.sockdir), "-p", str(source.port),
         "-U", "postgres", PLAIN_DB], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        user=user.uid, group=user.gid, extra_groups=[], cwd="/")
    assert dump.stdout is not None
    restore = subprocess.run(
        [str(BINDIR / "pg_restore"), "-C", "-h", str(target.sockdir), "-p", str(target.port),
         "-U", "postgres", "-d", "postgres"], stdin=dump.stdout, capture_output=True,
        text=True, timeout=7200, user=user.uid, group=user.gid, extra_groups=[], cwd="/")
    dump.stdout.close()
    dump_err = dump.communicate(timeout=60)[1]
    if dump.returncode or restore.returncode:
        raise RuntimeError(f"pg_dump | pg_restore failed: {dump_err!r} {restore.stderr!r}")


class BaseBackup:
    """pg_basebackup -X stream -c fast into a new data directory, then start it."""

    key = "pg_basebackup"

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir, self.port = workdir, port
        self.label = f"{tool_version('pg_basebackup')} pg_basebackup + start"

    def copy(self, source: Source, index: int) -> Copy:
        target = PlainCluster(self.workdir / f"base{index}", self.port)
        chown_postgres(target.root)
        user = postgres_user()
        started = time.perf_counter()
        subprocess.run(
            [str(BINDIR / "pg_basebackup"), "-D", str(target.pgdata), "-X", "stream",
             "-c", "fast", "-h", str(source.plain.sockdir), "-p", str(source.plain.port),
             "-U", "postgres"], user=user.uid, group=user.gid, extra_groups=[], cwd="/",
            check=True, capture_output=True, timeout=7200)
        copied = time.perf_counter()
        target.start()
        wait_query(target.conninfo(PLAIN_DB))
        done = time.perf_counter()
        return Copy(done - started, target.remove, target.conninfo(),
                    {"basebackup_s": round(copied - started, 4),
                     "start_s": round(done - copied, 4)})
