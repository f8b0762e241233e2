"""Seeding a replica: `zfs send` from agent to agent against pg_basebackup, in one run.

Two hosts in network namespaces (tests/e2e/fleet.py). A database on the first
is filled with `pgbench -i` (scale 135: about 2 GB; --small: scale 5, ~80 MB).
Then, on the second host, with the same primary and the same network path:

- pg_basebackup: `pg_basebackup -X stream -c fast` as the replication role,
  over TLS, into a fresh dataset of the second host's pool (what a seed without
  zfs send would do; its standby start is left out, to its favour);
- zfs send: CreateReplica through the coordinator, the whole call (slot,
  snapshot, the stream pulled over mutual TLS, zfs receive, standby start),
  and the stream alone as the agent measured it.

pg_basebackup runs first, so any cache it warms on the primary helps zfs send;
the order is in the output. Prints JSON.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import time
from pathlib import Path

from benchmarks.common import emit, log, record_args
from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.postgres.versions import resolve_version
from tests.e2e.fleet import HostFleet, host_fleet

MB = 1e6


def _fill(f: HostFleet, scale: int) -> tuple[apb.Connection, str, int, str]:
    with f.coordinator.stub() as c:
        made = c.CreateDatabase(cpb.FleetCreateDatabaseRequest(
            database=apb.CreateDatabaseRequest(name="seed", size_class="small")), timeout=300)
    conn, primary = made.result.connection, made.placement.host_id
    bindir = resolve_version(made.result.database.postgres_version)[1]
    log(f"pgbench -i -s {scale} on {primary}")
    subprocess.run([str(bindir / "pgbench"), "-i", "-q", "-s", str(scale), "-h",
                    conn.socket_dir, "-p", str(conn.port), "-U", "postgres", "postgres"],
                   check=True, capture_output=True, timeout=3600)
    size = int(subprocess.run(
        [str(bindir / "psql"), "-h", conn.socket_dir, "-p", str(conn.port), "-U", "postgres",
         "-Atc", "CHECKPOINT; SELECT sum(pg_database_size(oid)) FROM pg_database", "postgres"],
        check=True, capture_output=True, text=True, timeout=600).stdout.split()[-1])
    return conn, primary, size, made.result.database.postgres_version


def _basebackup(f: HostFleet, conn: apb.Connection, other: str,
                version: str) -> dict[str, float]:
    """pg_basebackup from the second host's namespace into a dataset of its pool."""
    d = f.daemons[other]
    target = f"{d.pool.name}/basebackup"
    subprocess.run(["zfs", "create", "-o", f"mountpoint={d.base}/basebackup", target],
                   check=True, timeout=60)
    # The role pg_hba.conf lets replicate; CreateReplica sets its own password later.
    secret = secrets.token_hex(16)
    bindir = resolve_version(version)[1]
    subprocess.run([str(bindir / "psql"), "-h", conn.socket_dir, "-p", str(conn.port), "-U",
                    "postgres", "-Atc", "CREATE ROLE cygnet_replicator REPLICATION LOGIN "
                    f"PASSWORD '{secret}'", "postgres"], check=True, capture_output=True,
                   timeout=60)
    env = {**os.environ, "PGPASSWORD": secret, "PGSSLMODE": "require"}
    started = time.perf_counter()
    try:
        subprocess.run(["nsenter", f"--net=/var/run/netns/{f.lan.ns(other)}",
                        str(bindir / "pg_basebackup"), "-h", conn.host, "-p", str(conn.port),
                        "-U", "cygnet_replicator", "-D", f"{d.base}/basebackup/pgdata",
                        "-X", "stream", "-c", "fast", "--no-sync"],
                       check=True, capture_output=True, env=env, timeout=3600)
        seconds = time.perf_counter() - started
        copied = int(subprocess.run(["du", "-sb", f"{d.base}/basebackup/pgdata"],
                                    capture_output=True, text=True, check=True).stdout.split()[0])
    finally:
        for _ in range(20):  # zfs-fuse reports a just-unused mount busy for a moment
            if subprocess.run(["zfs", "destroy", "-r", target], capture_output=True,
                              timeout=120).returncode == 0:
                break
            time.sleep(0.5)
    return {"seconds": round(seconds, 3), "bytes": copied,
            "mb_per_s": round(copied / MB / seconds, 1)}


def _replica(f: HostFleet, other: str) -> dict[str, object]:
    started = time.perf_counter()
    with f.coordinator.stub() as c:
        rep = c.CreateReplica(cpb.FleetCreateReplicaRequest(database="seed", host_id=other),
                              timeout=3600)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "stream_seconds": round(rep.seed_seconds, 3),
            "bytes": rep.seed_bytes,
            "mb_per_s": round(rep.seed_bytes / MB / max(rep.seed_seconds, 1e-6), 1),
            "state": rep.state}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="scale 5 (~80 MB), for the suite")
    parser.add_argument("--scale", type=int, default=0, help="pgbench scale (default 135)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--record-size", default="",
                        help="cygnetd's record_size (default: the daemon's own)")
    args = parser.parse_args()
    scale = args.scale or (5 if args.small else 135)
    with host_fleet(("s1", "s2"), port_base=59800, pool_size="8G" if scale > 20 else "3G",
                    daemon_args=record_args(args.record_size)) as f:
        conn, primary, size, version = _fill(f, scale)
        other = next(h for h in f.daemons if h != primary)
        log("pg_basebackup")
        base = _basebackup(f, conn, other, version)
        log("zfs send (CreateReplica)")
        zfs = _replica(f, other)
        zfs_seconds = float(str(zfs["seconds"]))
    result = {"scale": scale, "database_bytes": size, "order": ["pg_basebackup", "zfs_send"],
              "pg_basebackup": base, "zfs_send": zfs,
              "basebackup_over_zfs_send": round(base["seconds"] / zfs_seconds, 2)}
    emit("seed_small" if args.small else "seed", result, args.out)


if __name__ == "__main__":
    main()
