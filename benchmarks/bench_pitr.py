"""Point-in-time branch: ready time with WAL to replay since the last snapshot.

    .venv/bin/python -m benchmarks.bench_pitr            # ~2 GB, 5 minutes of pgbench -R 500
    .venv/bin/python -m benchmarks.bench_pitr --small    # what the suite runs

A database is loaded with pgbench, snapshotted, then written at a fixed rate
(`pgbench -R`) for a while. Point-in-time branches are then made to targets
spread over the last tenth of that stretch: each replays nearly all of the
WAL since the snapshot. Baseline in the same run: a plain branch from that
snapshot (a clone and a crash recovery, no replay), and pgBackRest's
`restore --type=time` of a full backup taken with that snapshot, into a new
dataset of the same pool, timed until the restored server has promoted. Its
archive is fed from the same cluster's pg_wal (benchmarks/pgbackrest.py).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from benchmarks.common import bench_daemon, emit, log, summary
from benchmarks.pgbackrest import PgBackRest
from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, query

PGBIN = Path("/usr/lib/postgresql/15/bin")


def ts(t: float) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(int(t * 1e9))
    return out


def write(uri: str, rate: int, seconds: int) -> tuple[float, float]:
    """pgbench at a fixed rate for `seconds`: the stretch's start and end (unix time)."""
    log(f"pgbench -R {rate} for {seconds}s")
    started = time.time()
    subprocess.run([str(PGBIN / "pgbench"), "-n", "-c", "4", "-j", "2", "-R", str(rate),
                    "-T", str(seconds), uri], check=True, capture_output=True,
                   timeout=seconds * 3 + 120)
    return started, time.time()


def run(scale: int, write_seconds: int, rate: int, rounds: int, baseline_rounds: int,
        record_size: str = "") -> dict[str, Any]:
    settings = f'record_size = "{record_size}"' if record_size else None
    with bench_daemon("16G" if scale > 10 else "3G", 57600, settings) as d, d.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="bench", size_class="medium"),
                              timeout=300)
        log(f"pgbench -i -s {scale}")
        subprocess.run([str(PGBIN / "pgbench"), "-i", "-q", "-s", str(scale),
                        db.connection.uri], check=True, capture_output=True, timeout=7200)
        size = int(str(query(db.connection, "select pg_database_size('postgres')")[0][0]))
        main = pb.BranchRef(database="bench")
        pgdata = d.mount_root / d.pool.name / "db" / db.database.id / db.main_branch.id / "pgdata"
        pgbr = PgBackRest(d.base / "bench", pgdata, db.connection)
        pusher = pgbr.push_wal(db.connection.uri)
        log("pgBackRest full backup")
        pgbr.backup("full")
        s.CreateSnapshot(pb.CreateSnapshotRequest(branch=main, name="base"), timeout=300)
        lsn0 = str(query(db.connection, "select pg_current_wal_insert_lsn()::text")[0][0])
        started, ended = write(db.connection.uri, rate, write_seconds)
        wal = int(str(query(db.connection, "select pg_current_wal_insert_lsn() - "
                                           f"'{lsn0}'::pg_lsn")[0][0]))
        log(f"pgBackRest: {pusher.finish()} segments pushed")
        pitr, plain, pgbackrest = [], [], []
        breakdown: list[str] = []
        for i in range(rounds):
            target = ended - (ended - started) * 0.1 * (i + 1) / rounds
            t0 = time.perf_counter()
            b = s.CreateBranch(pb.CreateBranchRequest(database="bench", name=f"pitr{i}",
                                                      at_time=ts(target)), timeout=3600)
            pitr.append(time.perf_counter() - t0)
            breakdown.append(redo_line(d))
            t0 = time.perf_counter()
            p = s.CreateBranch(pb.CreateBranchRequest(database="bench", name=f"plain{i}",
                                                      parent_snapshot="base"), timeout=600)
            plain.append(time.perf_counter() - t0)
            for made in (b, p):
                s.DeleteBranch(pb.DeleteBranchRequest(branch=pb.BranchRef(
                    branch_id=made.branch.id)), timeout=300)
            if i < baseline_rounds:
                when = datetime.fromtimestamp(target, UTC).isoformat(sep=" ")
                pgbackrest.append(pgbr.restore_to_time(d, when, f"pgbr-pitr{i}"))
            log(f"round {i + 1}: point in time {pitr[-1]:.2f}s, plain branch {plain[-1]:.2f}s"
                + (f", pgBackRest {pgbackrest[-1]['seconds']:.2f}s" if i < baseline_rounds
                   else ""))
    return {"scale": scale, "database_bytes": size, "write_seconds": write_seconds,
            "record_size": record_size or "daemon default", "rate_tps": rate,
            "wal_bytes_since_snapshot": wal,
            "pitr_ready_seconds": summary(pitr), "plain_branch_seconds": summary(plain),
            "pgbackrest_restore_time_seconds": (summary([r["seconds"] for r in pgbackrest])
                                                if pgbackrest else None),
            "pgbackrest_rounds": pgbackrest, "cygnet_rounds": breakdown,
            "target_p50_seconds": 10.0}


def redo_line(d: Daemon) -> str:
    """The daemon's account of the last recovery: staging time and Postgres' redo, then
    the steps of the whole call (plan, clone, recover, settle)."""
    text = d.log_path.read_text(errors="replace").splitlines()
    found = []
    for marker in ("Postgres' redo", " recovered to "):
        lines = [ln for ln in text if marker in ln]
        if lines:
            found.append(lines[-1].split(": ", 1)[-1])
    return "; ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="seconds, for the suite")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=5, help="point-in-time branches made")
    parser.add_argument("--baseline-rounds", type=int, default=2,
                        help="pgBackRest restores made (the first rounds' targets)")
    parser.add_argument("--scale", type=int, default=140, help="pgbench scale (140: ~2 GB)")
    parser.add_argument("--seconds", type=int, default=300, help="writes after the snapshot")
    parser.add_argument("--record-size", default="",
                        help="cygnetd's record_size, e.g. 16K, OpenZFS hosts' default "
                             "(default: the daemon's own, 128K on zfs-fuse)")
    args = parser.parse_args()
    if args.small:
        result = run(scale=1, write_seconds=8, rate=100, rounds=1, baseline_rounds=1)
    else:
        result = run(scale=args.scale, write_seconds=args.seconds, rate=500, rounds=args.rounds,
                     baseline_rounds=min(args.rounds, args.baseline_rounds),
                     record_size=args.record_size)
    name = "pitr_small" if args.small else "pitr"
    emit(name, result, args.out)


if __name__ == "__main__":
    main()
