"""PostgreSQL 18's newest in-cluster copy: CREATE DATABASE ... STRATEGY FILE_COPY
with `file_copy_method = clone`.

On a filesystem with reflinks (XFS, Btrfs, OpenZFS 2.2+ with block cloning) the
files are cloned (FICLONE), not copied: 6 GB was measured at 212 ms elsewhere.
zfs-fuse has no FICLONE and no copy_file_range sharing, so Postgres falls back
to copying every block; this method shows what that costs on the benchmark pool.

It runs on a plain 18 cluster of its own (the other plain methods use 15), loaded
with the same pgbench scale as the source; loading is not counted.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.common import log
from benchmarks.compare.data import checkpoint_and_size, pgbench_init
from benchmarks.compare.methods import PLAIN_DB, Copy, Source
from benchmarks.compare.methods_postgres import create_database_copy
from benchmarks.compare.plain import PlainCluster

PG18_BINDIR = Path("/usr/lib/postgresql/18/bin")


def pg18_version() -> str:
    out = subprocess.run([str(PG18_BINDIR / "postgres"), "--version"], capture_output=True,
                         text=True, check=True).stdout.split()
    return f"PostgreSQL {out[2]}"


class CreateDatabaseClone:
    """CREATE DATABASE cN TEMPLATE bench STRATEGY FILE_COPY on 18, file_copy_method = clone."""

    key = "createdb_file_copy_clone"

    def __init__(self, workdir: Path, port: int) -> None:
        self.label = f"{pg18_version()} CREATE DATABASE FILE_COPY, file_copy_method = clone"
        self.cluster = PlainCluster(workdir / "pg18", port, bindir=PG18_BINDIR,
                                    options=("file_copy_method=clone",))
        self.loaded = ""  # the source label whose data the cluster holds

    def prepare(self, source: Source) -> None:
        """Loads `source`'s pgbench scale into the 18 cluster (runner.measure_size)."""
        if self.loaded != source.label:
            self._load(source)

    def _load(self, source: Source) -> None:
        if not self.loaded:
            self.cluster.initdb()
            self.cluster.start()
        log(f"{source.label}: pgbench -i -s {source.scale} into the PostgreSQL 18 cluster")
        self.cluster.sql(f"drop database if exists {PLAIN_DB}")
        self.cluster.sql(f"create database {PLAIN_DB}")
        pgbench_init(source.scale, str(self.cluster.sockdir), self.cluster.port, PLAIN_DB)
        checkpoint_and_size(self.cluster.conninfo(), PLAIN_DB)
        self.loaded = source.label

    def copy(self, source: Source, index: int) -> Copy:
        self.prepare(source)
        return create_database_copy(self.cluster, f"copy{index}", "file_copy")
