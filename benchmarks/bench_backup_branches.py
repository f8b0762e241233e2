"""Backups of branches through cygnetd, against `cat`, pgBackRest and `zfs send`, in one run.

Both Cygnet and pgBackRest back up the running cluster from its live data
directory (pg_backup_start .. pg_backup_stop), and both restore into a new
dataset of the same pool.

Prints JSON. See "Backups of branches" in benchmarks/README.md.

    .venv/bin/python -m benchmarks.bench_backup_branches              # pgbench, >= 2 GB
    .venv/bin/python -m benchmarks.bench_backup_branches --small      # ~150 MB smoke run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import bench_daemon, emit, log
from benchmarks.pgbackrest import PgBackRest, tree_bytes
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import backup_pb2 as bpb
from tests.harness import Daemon, query, run
from tests.integration.backup_helpers import backups, run_stream

GB = 1e9
TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
PGBIN = Path("/usr/lib/postgresql/15/bin")


def sh(cmd: str) -> float:
    """Runs a shell pipeline; returns its wall time."""
    started = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, timeout=3600)
    return time.perf_counter() - started


def store_bytes(repo: Path) -> int:
    """The block store (packs, indexes, manifests): the repository without the
    WAL archive that continuous archiving keeps beside it (repo/wal)."""
    return tree_bytes(repo) - tree_bytes(repo / "wal")


def table_sums(conn: pb.Connection) -> dict[str, list[Any]]:
    """Row count and an order-independent hash sum of every row, per table."""
    return {t: list(query(conn, f"select count(*), sum(hashtext(x::text)::bigint)::text "
                                f"from {t} x")[0]) for t in TABLES}


def change_pages(conn: pb.Connection, offset: int) -> int:
    """Updates one row (in place: fillfactor 90 leaves room for HOT) on every 100th page
    of pgbench_accounts, starting at page `offset`: 1% of its pages. Returns the count."""
    row = query(conn, "select relpages from pg_class where relname = 'pgbench_accounts'")[0]
    pages = int(str(row[0]))
    query(conn, "update pgbench_accounts set abalance = abalance + 1 where ctid = any(array("
                f"select format('(%s,1)', p)::tid from generate_series({offset}, "
                f"{pages - 1}, 100) p))")
    return len(range(offset, pages, 100))


def backup(d: Daemon, ref: pb.BranchRef) -> tuple[bpb.Backup, float]:
    started = time.perf_counter()
    _, made = run_stream(backups(d).CreateBackup(bpb.CreateBackupRequest(branch=ref),
                                                 timeout=3600))
    return made, time.perf_counter() - started


def zfs_send(out: Path, snapshot: str, since: str = "") -> dict[str, Any]:
    incremental = f"-i {since} " if since else ""
    seconds = sh(f"zfs send {incremental}{snapshot} > {out}")
    size = out.stat().st_size
    out.unlink()
    return {"seconds": round(seconds, 2), "bytes": size}


def snapshot(d: Daemon, ref: pb.BranchRef, name: str, dataset: str) -> str:
    with d.stub() as s:
        snap = s.CreateSnapshot(pb.CreateSnapshotRequest(branch=ref, name=name), timeout=120)
    return f"{dataset}@{snap.id}"


def load(d: Daemon, scale: int) -> tuple[pb.CreateDatabaseResponse, int]:
    with d.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="bench", size_class="medium"),
                              timeout=300)
    log(f"pgbench -i -s {scale} -F 90")
    started = time.perf_counter()
    subprocess.run([str(PGBIN / "pgbench"), "-i", "-q", "-s", str(scale), "-F", "90",
                    db.connection.uri], check=True, capture_output=True, timeout=3600)
    log(f"loaded in {time.perf_counter() - started:.0f}s")
    row = query(db.connection, "select pg_database_size('postgres')")[0]
    return db, int(str(row[0]))


def cat_clone(d: Daemon, dataset: str) -> float:
    """`cat` of the files the way a backup reads them: a fresh snapshot's fresh clone."""
    clone = f"{d.pool.name}/cygnet/benchcat"
    run("zfs", "snapshot", f"{dataset}@benchcat")
    run("zfs", "clone", f"{dataset}@benchcat", clone)
    try:
        pgdata = d.mount_root / d.pool.name / "benchcat" / "pgdata"
        return sh(f"find {pgdata} -type f -print0 | xargs -0 cat > /dev/null")
    finally:
        for name in (clone, f"{dataset}@benchcat"):
            for _ in range(50):  # zfs-fuse reports busy for a moment after the last read
                if run("zfs", "destroy", name, check=False).returncode == 0:
                    break
                time.sleep(0.2)


def full_round(d: Daemon, db: pb.CreateDatabaseResponse, work: Path, cores: int
               ) -> dict[str, Any]:
    """cat, Cygnet full backup, pgBackRest full, zfs send full: the same cluster state.

    Both backups read the live data directory (the `cat` baselines say why:
    a fresh clone is read cold through zfs-fuse); pgBackRest's turn comes
    second, so neither gets a cache warmed by the other's reads alone."""
    main = pb.BranchRef(database="bench")
    pgdata = d.mount_root / d.pool.name / "db" / db.database.id / db.main_branch.id / "pgdata"
    dataset = f"{d.pool.name}/cygnet/db/{db.database.id}/{db.main_branch.id}"
    files = sum(1 for p in pgdata.rglob("*") if p.is_file())
    wal_bytes = tree_bytes(pgdata / "pg_wal")
    query(db.connection, "checkpoint")
    # The live directory: Postgres may drop a file (pg_internal.init) meanwhile.
    cat = [sh(f"{{ find {pgdata} -type f -print0 | xargs -0 cat > /dev/null 2>&1; }} || true")
           for _ in range(2)]
    # `cat` through a fresh clone: what a backup read before it read the live files.
    cat_fresh_clone = [cat_clone(d, dataset)]
    made, seconds = backup(d, main)
    sums = table_sums(db.connection)  # nothing writes meanwhile: the backup's contents
    snap = snapshot(d, main, "full", dataset)
    pgbr = PgBackRest(work, pgdata, db.connection)
    pgbr_full = pgbr.backup("full")
    pgbr_parallel = pgbr.backup("full", cores)
    pgdata_bytes = tree_bytes(pgdata)
    return {
        "pgdata_bytes": pgdata_bytes, "pg_wal_bytes": wal_bytes, "files": files,
        "backed_up_bytes": made.logical_bytes,
        "cat_seconds": [round(c, 2) for c in cat],
        "cat_gb_per_s": round(pgdata_bytes / min(cat) / GB, 3),
        "cat_fresh_clone_seconds": [round(c, 2) for c in cat_fresh_clone],
        "cat_fresh_clone_gb_per_s": round(pgdata_bytes / min(cat_fresh_clone) / GB, 3),
        "cygnet": {"backup_id": made.id, "seconds": round(seconds, 2),
                   "gb_per_s": round(made.logical_bytes / seconds / GB, 3),
                   "read_and_store_seconds": round(made.duration_seconds, 2),
                   "bytes_written": made.new_bytes,
                   "slowdown_vs_cat_warm": round(seconds / min(cat), 2),
                   "slowdown_vs_cat_fresh_clone": round(seconds / min(cat_fresh_clone), 2)},
        "repository_bytes_after": store_bytes(d.base / "state" / "backups"),
        "pgbackrest": pgbr_full,
        "pgbackrest_parallel": pgbr_parallel,
        "zfs_send": zfs_send(work / "full.zstream", snap),
        "_sums": sums, "_snap": snap, "_pgbr": pgbr, "_dataset": dataset,
    }


def incremental_round(d: Daemon, db: pb.CreateDatabaseResponse, work: Path,
                      full: dict[str, Any]) -> dict[str, Any]:
    pages = change_pages(db.connection, 0)
    made, seconds = backup(d, pb.BranchRef(database="bench"))
    snap = snapshot(d, pb.BranchRef(database="bench"), "incr", full["_dataset"])
    first = full["cygnet"]["bytes_written"]
    return {
        "pages_changed": pages,
        "cygnet": {"seconds": round(seconds, 2), "bytes_written": made.new_bytes,
                   "ratio_to_full": round(made.new_bytes / first, 4)},
        "pgbackrest": full["_pgbr"].backup("incr"),
        "zfs_send": zfs_send(work / "incr.zstream", snap, full["_snap"]),
    }


def branches_round(d: Daemon, count: int, full_bytes: int, full_repo: int) -> dict[str, Any]:
    """`count` branches of main, each with a different 1% of pages changed, each backed up."""
    written, seconds = [], []
    with d.stub() as s:
        for i in range(count):
            b = s.CreateBranch(pb.CreateBranchRequest(database="bench", name=f"b{i}"),
                               timeout=300)
            change_pages(b.connection, i + 1)
            made, took = backup(d, pb.BranchRef(branch_id=b.branch.id))
            written.append(made.new_bytes)
            seconds.append(round(took, 2))
            s.StopBranch(pb.StopBranchRequest(branch=pb.BranchRef(branch_id=b.branch.id)),
                         timeout=120)
    repo = d.base / "state" / "backups"
    total, packs = store_bytes(repo), tree_bytes(repo / "packs")
    return {"count": count, "bytes_written": written, "seconds": seconds,
            "sum_ratio_to_full": round(sum(written) / full_bytes, 4),
            "repository_bytes": total, "pack_bytes": packs,
            "manifest_bytes": tree_bytes(repo / "backups"),
            "archived_wal_bytes": tree_bytes(repo / "wal"),
            "repository_ratio_to_full": round(total / full_bytes, 4),
            "repository_ratio_to_full_repository": round(total / full_repo, 4),
            "pack_ratio_to_full": round(packs / full_bytes, 4)}


def restore_round(d: Daemon, full: dict[str, Any], cores: int) -> dict[str, Any]:
    """Cygnet's restore RPC (new dataset, files, recovery, ready) against pgBackRest's
    restore of its full backup into a new dataset (files only, not started)."""
    started = time.perf_counter()
    req = bpb.RestoreBackupRequest(backup_id=full["cygnet"]["backup_id"], branch_name="restored")
    written_at = 0.0
    done = None
    for event in backups(d).RestoreBackup(req, timeout=3600):
        if event.HasField("progress") and event.progress.phase == "start" and not written_at:
            written_at = time.perf_counter()  # every file written; Postgres starts next
        elif event.HasField("result"):
            done = event.result
    assert done is not None
    seconds = time.perf_counter() - started
    restored = table_sums(done.connection)
    pgbr = full["_pgbr"]
    return {"seconds": round(seconds, 2), "bytes_written": done.bytes_written,
            "files_written_seconds": round(written_at - started, 2),
            "gb_per_s": round(done.bytes_written / seconds / GB, 3),
            "checksums_equal": restored == full["_sums"], "tables": list(TABLES),
            "pgbackrest": pgbr.restore(d, full["pgbackrest"]["label"], 1),
            "pgbackrest_parallel": pgbr.restore(d, full["pgbackrest_parallel"]["label"], cores)}


def verify_round(d: Daemon) -> dict[str, Any]:
    started = time.perf_counter()
    _, report = run_stream(backups(d).VerifyBackups(bpb.VerifyBackupsRequest(), timeout=3600))
    seconds = time.perf_counter() - started
    return {"ok": report.ok, "seconds": round(seconds, 2),
            "gb_per_s": round(report.bytes_checked / seconds / GB, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--small", action="store_true", help="~150 MB, 3 branches (smoke run)")
    p.add_argument("--scale", type=int, help="pgbench scale (default 140: ~2.1 GB)")
    p.add_argument("--branches", type=int, default=10)
    args = p.parse_args()
    scale = args.scale or (10 if args.small else 140)
    count = 3 if args.small else args.branches
    cores = os.cpu_count() or 1
    with bench_daemon("16G", port_min=59800) as d:
        work = d.base / "bench"
        work.mkdir(mode=0o755)
        db, size = load(d, scale)
        log(f"database {size / GB:.2f} GB; full round")
        full = full_round(d, db, work, cores)
        log("incremental round (1% of pages)")
        incr = incremental_round(d, db, work, full)
        log(f"{count} branches")
        many = branches_round(d, count, full["cygnet"]["bytes_written"],
                              full["repository_bytes_after"])
        log("restore and verify")
        restored = restore_round(d, full, cores)
        verified = verify_round(d)
    result = {
        "benchmark": "backup_branches", "pgbench_scale": scale, "database_bytes": size,
        "full": {k: v for k, v in full.items() if not k.startswith("_")},
        "incremental_1pct": incr, "branches": many, "restore": restored, "verify": verified,
        "targets": {
            "full_backup_as_fast_as_pgbackrest":
                full["cygnet"]["seconds"] <= full["pgbackrest"]["seconds"],
            "full_backup_as_small_as_pgbackrest":
                full["cygnet"]["bytes_written"] <= full["pgbackrest"]["bytes_written"],
            "restore_as_fast_as_pgbackrest":
                restored["seconds"] <= restored["pgbackrest"]["seconds"],
            "incremental_smaller_than_pgbackrest":
                incr["cygnet"]["bytes_written"] < incr["pgbackrest"]["bytes_written"],
            "incremental_at_most_3pct": incr["cygnet"]["ratio_to_full"] <= 0.03,
            "ten_branches_at_most_1_2x": many["repository_ratio_to_full"] <= 1.2,
            "restore_checksums_equal": restored["checksums_equal"],
            "database_at_least_2gb": size >= 2e9,
        },
    }
    emit("backup_branches_small" if args.small else "backup_branches", result)


if __name__ == "__main__":
    main()
