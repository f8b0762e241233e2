"""One size at a time: load the source twice, then copy it with every method, interleaved."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import psycopg

from benchmarks.common import log, summary
from benchmarks.compare.data import checkpoint_and_size, pgbench_init, scale_for
from benchmarks.compare.disk import settled_used
from benchmarks.compare.methods import PLAIN_DB, Method, Source
from benchmarks.compare.plain import PlainCluster
from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon

MB = 1024 * 1024


def load_source(d: Daemon, plain: PlainCluster, megabytes: int) -> Source:
    scale = scale_for(megabytes)
    name = f"src{megabytes}"
    log(f"{megabytes} MB: pgbench -i -s {scale} into cygnet and the plain cluster")
    with d.stub() as s:
        created = s.CreateDatabase(pb.CreateDatabaseRequest(name=name), timeout=600)
    conn = created.connection
    pgbench_init(scale, conn.host, conn.port, conn.dbname, conn.password)
    db_bytes = checkpoint_and_size(conn.uri, conn.dbname)
    plain.sql(f"create database {PLAIN_DB}")
    pgbench_init(scale, str(plain.sockdir), plain.port, PLAIN_DB)
    checkpoint_and_size(plain.conninfo(), PLAIN_DB)
    return Source(f"{megabytes}MB", megabytes, scale, name, plain, db_bytes)


def drop_source(d: Daemon, source: Source) -> None:
    with d.stub() as s:
        s.DeleteDatabase(pb.DeleteDatabaseRequest(database=source.cygnet_db), timeout=600)
    source.plain.sql(f"drop database if exists {PLAIN_DB}")


def measure_once(pool: str, method: Method, source: Source, index: int) -> dict[str, Any]:
    """One copy: seconds to its first query, and the pool's `used` growth while it exists."""
    before = settled_used(pool)
    made = method.copy(source, index)
    try:
        # WAL_LOG leaves the copied pages dirty in shared buffers: count them
        # once written, as every copy's steady state.
        with psycopg.connect(made.conninfo, autocommit=True) as conn:
            conn.execute("checkpoint")
        after = settled_used(pool)
    finally:
        made.drop()
    sample = {"seconds": round(made.seconds, 4), "bytes_added": after - before, **made.detail}
    log(f"{source.label} {method.key} #{index}: {made.seconds:.3f}s "
        f"+{(after - before) / MB:.1f} MiB")
    return sample


def measure_size(d: Daemon, plain: PlainCluster, methods: Sequence[Method], megabytes: int,
                 repeat: int) -> dict[str, Any]:
    source = load_source(d, plain, megabytes)
    samples: dict[str, list[dict[str, Any]]] = {m.key: [] for m in methods}
    try:
        for method in methods:
            # A method with a cluster of its own loads the source there first,
            # outside the measured copies.
            prepare = getattr(method, "prepare", None)
            if prepare is not None:
                prepare(source)
        # Interleaved rounds, so every method sees the same cache and pool state.
        for index in range(repeat):
            for method in methods:
                samples[method.key].append(measure_once(d.pool.name, method, source, index))
    finally:
        drop_source(d, source)
    return {"label": source.label, "megabytes": megabytes, "pgbench_scale": source.scale,
            "database_bytes": source.database_bytes, "copies": repeat,
            "methods": {key: summarize(rows) for key, rows in samples.items()}}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    added = [int(r["bytes_added"]) for r in rows]
    return {"seconds": summary([float(r["seconds"]) for r in rows]),
            "bytes_added_median": int(statistics.median(added)),
            "bytes_added_max": max(added), "samples": rows}
