"""Daily growth: the repository, archived WAL included, after daily backups with
1% of pages changed per day.

    .venv/bin/python -m benchmarks.bench_growth             # scale 20 (~300 MB), 5 days
    .venv/bin/python -m benchmarks.bench_growth --small     # scale 2, 2 days

main archives its WAL (the default). A pgbench database (fillfactor 90, so
the updates stay on their pages) gets a first backup; then each "day"
updates one row on 1% of pgbench_accounts' pages, switches the WAL segment,
and takes a backup. The repository (block store and WAL archive) is measured
after each. Target: each day adds at most 1.5% of the repository. Baseline in
the same run: the bytes of the pages changed (1% of the table), the least a
block-level backup must store.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_backup_branches import PGBIN, backup, change_pages
from benchmarks.common import bench_daemon, emit, log
from benchmarks.pgbackrest import tree_bytes
from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, query

PAGE = 8192


def _settled(d: Daemon, conn: pb.Connection) -> None:
    """The day's WAL closed and ingested: the spool is empty (or 30 s passed)."""
    query(conn, "select pg_switch_wal()")
    spool = d.base / "state" / "wal-spool"
    deadline = time.monotonic() + 30
    time.sleep(0.5)
    while time.monotonic() < deadline and any(
            f.is_file() and not f.name.startswith(".") for f in spool.rglob("*")):
        time.sleep(0.2)


def run(scale: int, days: int) -> dict[str, Any]:
    with bench_daemon("8G" if scale > 5 else "3G", 58800) as d, d.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="growth", size_class="medium"),
                              timeout=300)
        conn, ref = db.connection, pb.BranchRef(database="growth")
        log(f"pgbench -i -s {scale} --fillfactor=90")
        subprocess.run([str(PGBIN / "pgbench"), "-i", "-q", "-s", str(scale), "--fillfactor=90",
                        conn.uri], check=True, capture_output=True, timeout=7200)
        size = int(str(query(conn, "select pg_database_size('postgres')")[0][0]))
        repo = d.base / "state" / "backups"
        _settled(d, conn)
        backup(d, ref)
        before = tree_bytes(repo)
        first = before
        rows = []
        for day in range(1, days + 1):
            changed = change_pages(conn, day)
            _settled(d, conn)
            backup(d, ref)
            after = tree_bytes(repo)
            wal = tree_bytes(repo / "wal")
            rows.append({"day": day, "pages_changed": changed,
                         "changed_bytes": changed * PAGE, "repository_bytes": after,
                         "wal_bytes": wal, "added_bytes": after - before,
                         "growth_ratio": round((after - before) / before, 5)})
            log(f"day {day}: +{after - before} bytes ({(after - before) / before:.3%}), "
                f"WAL archive {wal} bytes")
            before = after
    worst = max(r["growth_ratio"] for r in rows)
    return {"scale": scale, "database_bytes": size, "days": days,
            "first_repository_bytes": first, "per_day": rows,
            "baseline_changed_bytes_per_day": rows[0]["changed_bytes"],
            "worst_growth_ratio": worst, "target_growth_ratio": 0.015,
            "meets_target": worst <= 0.015}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="seconds, for a quick check")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = run(scale=2, days=2) if args.small else run(scale=20, days=5)
    name = "growth_small" if args.small else "growth"
    emit(name, result, args.out)


if __name__ == "__main__":
    main()
