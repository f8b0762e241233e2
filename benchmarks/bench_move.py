"""Moving a database between hosts: client-side downtime against size, under pgbench writes.

Two hosts in network namespaces (tests/e2e/fleet.py). For each size a
database is filled with `pgbench -i` (10 MB, 1 GB and 4 GB by default;
--small: 10 MB and 50 MB, for the suite), then moved (MoveDatabase through the
coordinator) while `pgbench -N` writes to it and a ledger client commits one
row at a time through the database's connection string, asking the
coordinator again after an error. The downtime is the client's: from the
last commit acknowledged on the source host to the first on the target.

Baseline, in the same run: a stop-and-copy move would be down for as long
as the full stream of the data (round 0, timed from the move's own progress)
plus a start; the output gives that figure beside the online move's.
The checksums of the tables nobody writes during the move are compared after
it; for the written ones, every acknowledged ledger row must be on the target
and pgbench's balances must agree with its history. Prints JSON.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import psycopg

from benchmarks.common import emit, log, record_args
from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.postgres.versions import resolve_version
from tests.e2e.fleet import HostFleet, host_fleet
from tests.e2e.test_move import _checksums
from tests.e2e.test_replicas import Client

SCALE_MB = 15.0  # pgbench -i: about 15 MB per unit of scale
SIZES_MB = (10, 1024, 4096)
SMALL_MB = (10, 50)
# Written during the move (-N leaves tellers and branches alone): the ledger's rows
# and the balances are checked instead of a checksum.
WRITTEN = ("ledger", "pgbench_accounts", "pgbench_history")


class Writer:
    """Commits one row at a time; notes when and on which host each was acknowledged."""

    def __init__(self, f: HostFleet, client: Client, name: str) -> None:
        self.f, self.client, self.name = f, client, name
        self.acks: list[tuple[float, str, int]] = []  # time, host address, seq
        # Each connection attempt: start, URI known, connected or failed, host, outcome.
        self.tries: list[tuple[float, float, float, str, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        # One channel to the coordinator for the whole run, as a control plane keeps
        # one: a channel per attempt spent 13-49 ms of mTLS setup on each of them.
        with self.f.coordinator.stub() as coordinator:
            self._run(coordinator)

    def _run(self, coordinator: Any) -> None:
        def current_uri() -> str:
            conn: apb.Connection = coordinator.GetConnection(apb.GetConnectionRequest(
                branch=apb.BranchRef(database=self.name)), timeout=60)
            return conn.uri

        seq, uri = 0, ""
        while not self.stop.is_set():
            started, host = time.monotonic(), ""
            try:
                uri = uri or current_uri()
                known = time.monotonic()
                host = uri.split("@", 1)[1].split(":", 1)[0]
                with psycopg.connect(uri, autocommit=True, connect_timeout=3) as c:
                    self.tries.append((started, known, time.monotonic(), host, "connected"))
                    while not self.stop.is_set():
                        seq += 1
                        c.execute("INSERT INTO ledger VALUES (%s)", (seq,))
                        self.acks.append((time.monotonic(), host, seq))
            except (psycopg.Error, grpc.RpcError) as exc:
                now = time.monotonic()
                self.tries.append((started, known if host else now, now, host,
                                   type(exc).__name__))
                time.sleep(0.02)
                uri = ""

    def tries_between(self, source: str, target: str, since: float) -> list[dict[str, Any]]:
        """The attempts from the last commit on `source` to the first on `target`: where
        the client's downtime went (times in ms from that last commit)."""
        acks = list(self.acks)
        first_target = min(t for t, h, _ in acks if h == target and t >= since)
        last_source = max(t for t, h, _ in acks if h == source and t < first_target)
        return [{"at_ms": round((a - last_source) * 1000, 1),
                 "uri_ms": round((b - a) * 1000, 1), "connect_ms": round((c - b) * 1000, 1),
                 "host": h, "outcome": o}
                for a, b, c, h, o in list(self.tries) if last_source <= c <= first_target]

    def downtime(self, source: str, target: str, since: float) -> float:
        """From the last commit on `source` to the first on `target`, after `since`."""
        acks = list(self.acks)
        first_target = min(t for t, h, _ in acks if h == target and t >= since)
        last_source = max(t for t, h, _ in acks if h == source and t < first_target)
        return first_target - last_source


def _fill(f: HostFleet, name: str, mb: int, password_out: dict[str, str],
          branches: int = 0) -> tuple[str, str]:
    with f.coordinator.stub() as c:
        made = c.CreateDatabase(cpb.FleetCreateDatabaseRequest(
            database=apb.CreateDatabaseRequest(name=name, size_class="small")), timeout=300)
        for i in range(branches):  # running branches, each with a dataset of its own
            c.CreateBranch(apb.CreateBranchRequest(database=name, name=f"b{i}"), timeout=300)
    conn = made.result.connection
    password_out[name] = conn.password
    bindir = resolve_version(made.result.database.postgres_version)[1]
    scale = max(1, round(mb / SCALE_MB))
    log(f"{name}: pgbench -i -s {scale} on {made.placement.host_id}")
    subprocess.run([str(bindir / "pgbench"), "-i", "-q", "-s", str(scale), "-h",
                    conn.socket_dir, "-p", str(conn.port), "-U", "postgres", "postgres"],
                   check=True, capture_output=True, timeout=7200)
    return made.placement.host_id, conn.uri


def _pgbench(f: HostFleet, uri: str, password: str, version_bin: Path) -> subprocess.Popen[str]:
    """Writes (pgbench -N) from the client's namespace until killed or the source stops."""
    env = {**os.environ, "PGPASSWORD": password}
    return subprocess.Popen(["nsenter", f"--net=/var/run/netns/{f.lan.ns('client')}",
                             str(version_bin / "pgbench"), "-n", "-N", "-c", "2", "-T", "7200",
                             uri], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)


def _move(f: HostFleet, name: str, target: str) -> dict[str, Any]:
    phases: dict[str, float] = {}
    out: dict[str, Any] = {}
    started = time.monotonic()
    with f.coordinator.stub() as c:
        for p in c.MoveDatabase(cpb.MoveDatabaseRequest(database=name, to_host=target),
                                timeout=7200):
            phases.setdefault(p.phase, time.monotonic() - started)
            out["moved_bytes"] = max(out.get("moved_bytes", 0), p.moved_bytes)
            if p.HasField("downtime"):
                out["agent_downtime_seconds"] = round(p.downtime.ToNanoseconds() / 1e9, 3)
    out["seconds"] = round(time.monotonic() - started, 3)
    after_full = min(v for k, v in phases.items() if k in ("catch-up", "final"))
    out["full_round_seconds"] = round(after_full - phases.get("full", 0.0), 3)
    out["phases"] = {k: round(v, 3) for k, v in phases.items()}
    return out


def one(f: HostFleet, client: Client, mb: int, moves: int = 1,
        branches: int = 0) -> list[dict[str, Any]]:
    """Fills a database of `mb` (and `branches` branches), then moves it `moves`
    times, to the other host and back, each under fresh pgbench writes."""
    name = f"mv{mb}"
    passwords: dict[str, str] = {}
    host, uri = _fill(f, name, mb, passwords, branches)
    password = passwords[name]
    full_uri = uri.replace("postgres@", f"postgres:{password}@", 1)
    client.query(full_uri, "CREATE TABLE ledger (seq int PRIMARY KEY)")
    before = _checksums(client, full_uri, skip=WRITTEN)
    writer = Writer(f, client, name)
    thread = client.pool.submit(writer.run)
    out = []
    try:
        for _ in range(moves):
            target = next(h for h in f.daemons if h != host)
            out.append({"size_mb": mb, "branches": branches,
                        **_move_once(f, client, writer, (name, password), (host, target),
                                     before)})
            log(f"{mb} MB {host} -> {target}: {out[-1]['client_downtime_seconds']}s down "
                "for the client")
            host = target
    finally:
        writer.stop.set()
        thread.result(60)
    return out


def _move_once(f: HostFleet, client: Client, writer: Writer, db: tuple[str, str],
               hosts: tuple[str, str], before: Any) -> dict[str, Any]:
    (name, password), (source, target) = db, hosts
    with f.coordinator.stub() as c:
        uri = c.GetConnection(apb.GetConnectionRequest(branch=apb.BranchRef(database=name)),
                              timeout=60).uri.replace("postgres@", f"postgres:{password}@", 1)
    load = _pgbench(f, uri, password, resolve_version("")[1])
    since = len(writer.acks)
    while len(writer.acks) < since + 100:
        time.sleep(0.05)
    log(f"{name}: moving {source} -> {target}")
    started = time.monotonic()
    moved = _move(f, name, target)
    until = len(writer.acks) + 100
    while len(writer.acks) < until:
        time.sleep(0.05)
    load.kill()
    load.wait()
    down = writer.downtime(f.lan.nodes[source], f.lan.nodes[target], started)
    with f.coordinator.stub() as c:
        new = c.GetConnection(apb.GetConnectionRequest(branch=apb.BranchRef(database=name)),
                              timeout=60).uri.replace("postgres@", f"postgres:{password}@", 1)
    acked = list(writer.acks)  # (the writer goes on: what it acknowledges later is not read)
    rows = {int(str(r[0])) for r in client.query(new, "SELECT seq FROM ledger")}
    lost = [s for _, _, s in acked if s not in rows]
    size = int(str(client.query(new, "SELECT pg_database_size('postgres')")[0][0]))
    return {"from": source, "to": target, "database_bytes": size,
            "client_downtime_seconds": round(down, 3),
            "client_tries": writer.tries_between(f.lan.nodes[source], f.lan.nodes[target],
                                                 started), **moved,
            "stop_and_copy_seconds_at_least": moved["full_round_seconds"],
            "commits": len(acked), "lost": len(lost),
            "checksums_equal": _checksums(client, new, skip=WRITTEN) == before,
            "balances_agree": _balanced(client, new)}


def _balanced(client: Client, uri: str) -> bool:
    """pgbench -N moves each delta into an account and the history in one commit."""
    row = client.query(uri, "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts) "
                            "= (SELECT coalesce(sum(delta), 0) FROM pgbench_history)")
    return bool(row[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="10 MB and 50 MB, for the suite")
    parser.add_argument("--sizes", default="", help="sizes in MB, comma separated")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--record-size", default="",
                        help="cygnetd's record_size (default: the daemon's own)")
    parser.add_argument("--branches", type=int, default=0,
                        help="running branches of each database (a dataset each)")
    parser.add_argument("--compare", type=int, default=0, metavar="MOVES",
                        help="move each database MOVES times between the hosts; m1 receives "
                        "one dataset at a time (move_streams = 1), m2 several (the default)")
    args = parser.parse_args()
    sizes = tuple(int(x) for x in args.sizes.split(",") if x) or (
        SMALL_MB if args.small else SIZES_MB)
    pool = "3G" if max(sizes) < 400 else f"{max(sizes) * 3 // 1024 + 4}G"
    results = []
    one_stream: dict[str, tuple[str, ...]] = (
        {"m1": ("--move-streams", "1")} if args.compare else {})
    with host_fleet(("m1", "m2"), port_base=56000, pool_size=pool,
                    daemon_args=record_args(args.record_size), host_args=one_stream) as f:
        client = Client(f)
        for mb in sizes:
            results += one(f, client, mb, max(1, args.compare), args.branches)
    downs = sorted(r["client_downtime_seconds"] for r in results)
    by_mode = {mode: sorted(r["client_downtime_seconds"] for r in results
                            if (r["to"] in one_stream) == (mode == "one_stream"))
               for mode in ("one_stream", "side_by_side")}
    emit("move_small" if args.small else "move", {
        "sizes": results, "client_downtime_p50": downs[len(downs) // 2],
        **({"client_downtime_p50_by_mode": {k: v[len(v) // 2] for k, v in by_mode.items()
                                            if v}} if args.compare else {}),
        "note": "pgbench -N (2 clients) and a one-row-per-commit ledger write during "
                "each move; downtime from the last ledger commit acknowledged on the "
                "source to the first on the target"}, args.out)


if __name__ == "__main__":
    main()
