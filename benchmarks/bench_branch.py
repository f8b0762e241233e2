"""Branch ready and new database ready: cygnetd against the raw floor, in one run.

Prints JSON. See benchmarks/README.md for what is measured and the targets.

    .venv/bin/python -m benchmarks.bench_branch            # 10 MB and 2 GB, 10 branches each
    .venv/bin/python -m benchmarks.bench_branch --small    # 10 MB only, 3 branches (smoke run)
"""

from __future__ import annotations

import argparse
import platform
import secrets
import time
from typing import Any

import psycopg

from benchmarks.common import bench_daemon, emit, log, summary, wait_query
from benchmarks.raw_floor import drop_raw_branch, raw_branch, raw_new_cluster
from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, free_port, run

MB = 1024 * 1024


def fill(conn: pb.Connection, megabytes: int) -> int:
    """Loads about `megabytes` of table data; returns the database size in bytes."""
    rows = megabytes * 1024 * 1024 // 1100  # ~1.1 kB per row with overhead
    with psycopg.connect(conn.uri, autocommit=True) as c:
        c.execute("create table payload(id bigint primary key, body text)")
        step = 200_000
        for start in range(0, rows, step):
            last = min(rows, start + step) - 1
            c.execute("insert into payload select g, repeat(md5(g::text), 31) "
                      "from generate_series(%s::bigint, %s::bigint) g", (start, last))
        # A database at rest: hint bits and the visibility map set now, not by
        # autovacuum in the middle of the measurements (whose dirty pages the
        # branch-point CHECKPOINT would then have to write, on both sides).
        c.execute("vacuum (analyze, freeze) payload")
        c.execute("checkpoint")
        size = c.execute("select pg_database_size('postgres')").fetchone()
    return int(size[0]) if size else 0


def daemon_branch(d: Daemon, db: str, i: int) -> tuple[float, pb.Branch]:
    """Seconds from sending CreateBranch until a query answers on the new branch."""
    with d.stub() as s:
        started = time.perf_counter()
        resp = s.CreateBranch(pb.CreateBranchRequest(database=db, name=f"b{i}"), timeout=120)
        wait_query(resp.connection.uri)
        elapsed = time.perf_counter() - started
    return elapsed, resp.branch


def measure_size(d: Daemon, megabytes: int, count: int) -> dict[str, Any]:
    name = f"size{megabytes}"
    with d.stub() as s:
        created = s.CreateDatabase(pb.CreateDatabaseRequest(name=name, size_class="small"),
                                   timeout=120)
    log(f"loading {megabytes} MB")
    db_bytes = fill(created.connection, megabytes)
    main = created.main_branch
    dataset = next(x for x in d.pool.datasets() if x.endswith(main.id))
    mount = d.mount_root / d.pool.name / "db" / created.database.id
    socket = str(d.base / "run" / "s" / main.id)
    daemon_times, raw_times, costs = [], [], []
    for i in range(count):
        # Interleaved, so both see the same cache and pool state.
        raw_s, clone = raw_branch(dataset, socket, main.port, mount, free_port(),
                                  created.connection.password)
        raw_times.append(raw_s)
        drop_raw_branch(clone, dataset, mount)
        before = pool_allocated(d)
        took, branch = daemon_branch(d, name, i)
        daemon_times.append(took)
        costs.append(branch_used(d, branch.id))
        log(f"{megabytes} MB #{i}: daemon {took:.3f}s raw {raw_s:.3f}s "
            f"pool +{(pool_allocated(d) - before) / MB:.2f} MiB")
        with d.stub() as s:
            s.DeleteBranch(pb.DeleteBranchRequest(branch=pb.BranchRef(branch_id=branch.id)))
    with d.stub() as s:
        s.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)
    daemon_sum, raw_sum = summary(daemon_times), summary(raw_times)
    return {
        "database_bytes": db_bytes, "branches": count,
        "daemon_seconds": daemon_sum, "raw_floor_seconds": raw_sum,
        "daemon_over_raw_p50": round(daemon_sum["p50"] / raw_sum["p50"], 3),
        "branch_used_bytes": summary([float(c) for c in costs]),
        "samples": {"daemon": daemon_times, "raw_floor": raw_times},
    }


def pool_allocated(d: Daemon) -> int:
    out = run("zfs", "get", "-H", "-p", "-o", "value", "used", d.pool.name).stdout
    return int(out.strip())


def branch_used(d: Daemon, branch_id: str) -> int:
    dataset = next(x for x in d.pool.datasets() if x.endswith(branch_id))
    out = run("zfs", "get", "-H", "-p", "-o", "value", "used", dataset).stdout
    return int(out.strip())


def measure_new_database(d: Daemon, count: int, baseline_count: int) -> dict[str, Any]:
    times = []
    for i in range(count):
        with d.stub() as s:
            started = time.perf_counter()
            resp = s.CreateDatabase(pb.CreateDatabaseRequest(name=f"new{i}",
                                                             size_class="nano"), timeout=120)
            wait_query(resp.connection.uri)
            times.append(time.perf_counter() - started)
    with d.stub() as s:
        for i in range(count):
            s.DeleteDatabase(pb.DeleteDatabaseRequest(database=f"new{i}"), timeout=120)
    workroot = d.mount_root / d.pool.name
    raw = [raw_new_cluster(workroot / f"initdb-{secrets.token_hex(3)}", free_port())
           for _ in range(baseline_count)]
    ours, theirs = summary(times), summary(raw)
    return {"daemon_seconds": ours, "initdb_start_seconds": theirs,
            "speedup_p50": round(theirs["p50"] / ours["p50"], 2),
            "samples": {"daemon": times, "initdb_start": raw}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="10 MB only, 3 branches")
    parser.add_argument("--branches", type=int, default=10)
    parser.add_argument("--large-mb", type=int, default=2048)
    args = parser.parse_args()
    sizes = [10] if args.small else [10, args.large_mb]
    count = 3 if args.small else args.branches
    pool_size = "1G" if args.small else f"{max(8, args.large_mb * 3 // 1024 + 4)}G"
    result: dict[str, Any] = {"benchmark": "branch_ready", "host": platform.node(),
                              "kernel": platform.release(), "sizes": {}}
    with bench_daemon(pool_size, port_min=57000) as d:
        result["zfs"] = run("scripts/start-zfs", "--dialect").stdout.strip()
        for mb in sizes:
            result["sizes"][f"{mb}MB"] = measure_size(d, mb, count)
        result["new_database"] = measure_new_database(d, count, 2 if args.small else 3)
    small, large = result["sizes"]["10MB"], result["sizes"].get(f"{args.large_mb}MB")
    result["targets"] = {
        "daemon_over_raw_p50_max_1.25": max(s["daemon_over_raw_p50"]
                                            for s in result["sizes"].values()),
        "new_database_p50_under_1s": result["new_database"]["daemon_seconds"]["p50"],
    }
    if large:
        result["targets"]["large_over_small_p50_max_1.2"] = round(
            large["daemon_seconds"]["p50"] / small["daemon_seconds"]["p50"], 3)
        result["targets"]["large_branch_used_mib_max_2"] = round(
            large["branch_used_bytes"]["max"] / MB, 3)
    emit("branch_small" if args.small else "branch", result)


if __name__ == "__main__":
    main()
