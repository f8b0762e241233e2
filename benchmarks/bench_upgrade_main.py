"""The downtime of upgrading main: a fresh upgraded branch, then PromoteBranch.

One throwaway cygnetd, one PostgreSQL 15 database with pgbench's tables. Per
round, with writes stopped: `CreateBranch upgrade_to=18` (the rehearsal the
procedure makes fresh), then `PromoteBranch` of it, timed on the client until
main answers with the new major; the daemon reports main's own downtime
(stop to start). Baseline in the same run: promoting a plain branch (no
upgrade), so the swap's own cost is visible beside pg_upgrade's.

    .venv/bin/python -m benchmarks.bench_upgrade_main            # scale 10, 2 rounds
    .venv/bin/python -m benchmarks.bench_upgrade_main --small    # scale 1, 1 round
"""

from __future__ import annotations

import argparse
import subprocess
import time
from typing import Any

from benchmarks.common import bench_daemon, emit, log, summary, wait_query
from cygnet.api.v1 import agent_pb2 as pb

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"


def promote(s: Any, name: str, branch: str, conn: pb.Connection) -> tuple[float, float]:
    """(client seconds until main answers again, daemon-reported downtime)."""
    t0 = time.perf_counter()
    res = s.PromoteBranch(pb.PromoteBranchRequest(
        branch=pb.BranchRef(database=name, name=branch), drop_old_main=True), timeout=600)
    wait_query(conn.uri)
    return time.perf_counter() - t0, res.downtime.ToTimedelta().total_seconds()


def run(scale: int, rounds: int) -> dict[str, Any]:
    out: dict[str, list[float]] = {k: [] for k in (
        "upgraded_branch_seconds", "promote_upgraded_client_seconds",
        "promote_upgraded_downtime_seconds", "plain_branch_seconds",
        "promote_plain_client_seconds", "promote_plain_downtime_seconds")}
    with bench_daemon("8G", 62500) as d, d.stub() as s:
        for r in range(rounds):
            name = f"up{r}"
            db = s.CreateDatabase(pb.CreateDatabaseRequest(
                name=name, postgres_version="15", size_class="small"), timeout=600)
            subprocess.run([PGBENCH, "-i", "-s", str(scale), "-q", db.connection.uri],
                           check=True, capture_output=True, timeout=1200)
            t0 = time.perf_counter()
            s.CreateBranch(pb.CreateBranchRequest(database=name, name="plain"), timeout=600)
            out["plain_branch_seconds"].append(time.perf_counter() - t0)
            client, down = promote(s, name, "plain", db.connection)
            out["promote_plain_client_seconds"].append(client)
            out["promote_plain_downtime_seconds"].append(down)
            t0 = time.perf_counter()
            s.CreateBranch(pb.CreateBranchRequest(database=name, name="pg18", upgrade_to="18"),
                           timeout=1200)
            out["upgraded_branch_seconds"].append(time.perf_counter() - t0)
            client, down = promote(s, name, "pg18", db.connection)
            out["promote_upgraded_client_seconds"].append(client)
            out["promote_upgraded_downtime_seconds"].append(down)
            major = s.GetDatabase(pb.GetDatabaseRequest(database=name)).postgres_version
            log(f"round {r}: database {name} now runs {major}")
            s.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=600)
    result: dict[str, Any] = {"pgbench_scale": scale, "rounds": rounds}
    result |= {k: summary(v) for k, v in out.items()}
    # Writes stay stopped from the upgraded branch's start to main's answer.
    total = [a + b for a, b in zip(out["upgraded_branch_seconds"],
                                   out["promote_upgraded_client_seconds"], strict=True)]
    result["writes_stopped_seconds"] = summary(total)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--small", action="store_true", help="scale 1, one round")
    args = p.parse_args()
    if args.small:
        args.scale, args.rounds = 1, 1
    emit("upgrade_main", run(args.scale, args.rounds))


if __name__ == "__main__":
    main()
