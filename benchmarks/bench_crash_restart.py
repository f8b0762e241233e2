"""How fast a killed postmaster is back: kill -9, then time until `select 1` answers.

    .venv/bin/python -m benchmarks.bench_crash_restart [--rounds N]

Starts a throwaway cygnetd on its own file-backed pool, makes one database,
then per round kills its postmaster with SIGKILL and measures until a query
over TCP answers again (`restart_seconds` is the part from the supervisor
seeing the death to the postmaster being ready, crash recovery included).
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time

import psycopg

from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import postmaster_pids, private_daemon


def _answers(uri: str) -> bool:
    try:
        with psycopg.connect(uri, connect_timeout=1) as c:
            return c.execute("select 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: list[float] = []
    with private_daemon("bcr", 57400, "2G", unix_only=True) as d:
        with d.stub() as s:
            db = s.CreateDatabase(pb.CreateDatabaseRequest(name="crashy"), timeout=120)
        root = d.mount_root / d.pool.name / "db" / db.database.id
        for _ in range(args.rounds):
            (old,) = postmaster_pids(root)
            time.sleep(1.0)  # let the supervisor settle between rounds
            started = time.monotonic()
            os.kill(old, signal.SIGKILL)
            while not _answers(db.connection.uri):
                time.sleep(0.01)
            times.append(time.monotonic() - started)
        log = d.log_path.read_text()
    print(json.dumps({
        "rounds": len(times), "seconds": [round(t, 3) for t in times],
        "p50": round(statistics.median(times), 3), "max": round(max(times), 3),
        "failed_starts_logged": log.count("failed ("),
        # From the supervisor seeing the death to the postmaster being ready.
        "restart_seconds": [float(line.rsplit(" ", 1)[1].rstrip("s"))
                            for line in log.splitlines() if " back in " in line],
    }, indent=2))


if __name__ == "__main__":
    main()
