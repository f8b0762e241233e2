"""Scale to zero: cold start of a suspended branch, client-side, and its memory.

    .venv/bin/python -m benchmarks.bench_wake [--rounds N] [--out DIR]

Starts a throwaway cygnetd on its own file-backed zfs-fuse pool, makes one
database and one branch, then per round suspends the branch and measures,
from the client's side, until `select 1` answers again:

- `wake_rpc`: ResumeBranch over the daemon's socket, then a TLS connection
  (verify-full, SCRAM) to the port it returns and `select 1`;
- `wake_endpoint`: a connection to the branch's endpoint string (the host's
  Postgres endpoint wakes it), then `select 1`; absent when no endpoint runs.

Baselines measured in the same run: `warm_connect` (connect + `select 1` to
the running branch, the floor of any cold start) and `start_rpc` (StartBranch
of a stopped branch, which keeps its port, then connect + `select 1`).

Memory: the PSS of the branch's postmaster and all its children, idle after
one connection (`running_pss_bytes`), against a suspended branch, which has
no process at all. Prints JSON (and keeps it in benchmarks/results).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.common import RESULTS, emit, log, summary
from cygnet.agent.idle import backends, wal_to_archive
from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, private_daemon

TARGET_P50 = 0.5  # seconds, issue 13


def _select_one(uri: str) -> None:
    with psycopg.connect(uri, connect_timeout=30) as conn:
        conn.execute("select 1").fetchone()


def _processes(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(c) for c in children)]


def _pss(pid: int) -> int:
    """PSS in bytes of one process (shared pages divided among their users)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:  # exited meanwhile (a backend whose client just left)
        return 0
    return next((int(line.split()[1]) * 1024 for line in lines if line.startswith("Pss:")), 0)


def cluster_pss(pgdata: Path) -> tuple[int, int]:
    """PSS of a branch's postmaster and children, and how many processes that is."""
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return 0, 0
    pids = _processes(int(pid_file.read_text().split()[0]))
    return sum(_pss(p) for p in pids), len(pids)


def idle_check_cost(pgdata: Path, n: int = 500) -> float:
    """Microseconds the idle suspender spends per running branch: its clients from
    /proc and its WAL still to archive (a suspended branch costs nothing)."""
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    started = time.perf_counter()
    for _ in range(n):
        backends(pid)
        wal_to_archive(pgdata)
    return (time.perf_counter() - started) / n * 1e6


def _pgdata(daemon: Daemon, b: pb.Branch) -> Path:
    (found,) = (daemon.mount_root / daemon.pool.name / "db" / b.database_id).glob(f"{b.id}*")
    return found / "pgdata"


def measure(daemon: Daemon, rounds: int) -> dict[str, Any]:
    """Every figure on `daemon` (whose branches must not suspend by themselves)."""
    with daemon.stub() as stub:
        db = stub.CreateDatabase(pb.CreateDatabaseRequest(
            name=f"wake-{int(time.time() * 1000) % 10**8}", size_class="nano"), timeout=120)
        try:
            return _rounds(daemon, stub, db, rounds)
        finally:
            stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=db.database.id), timeout=120)


def _rounds(daemon: Daemon, stub: Any, db: pb.CreateDatabaseResponse, rounds: int
            ) -> dict[str, Any]:
    b = stub.CreateBranch(pb.CreateBranchRequest(database=db.database.id, name="preview"),
                          timeout=120).branch
    ref = pb.BranchRef(branch_id=b.id)
    conn = stub.GetConnection(pb.GetConnectionRequest(branch=ref), timeout=30)
    _select_one(conn.uri)
    time.sleep(0.5)  # its backend gone: the idle cluster is what is measured
    running_pss, processes = cluster_pss(_pgdata(daemon, b))
    check_us = idle_check_cost(_pgdata(daemon, b))
    warm, start, wake_rpc, wake_endpoint = [], [], [], []
    for i in range(rounds):
        log(f"round {i + 1}/{rounds}")
        started = time.perf_counter()
        _select_one(stub.GetConnection(pb.GetConnectionRequest(branch=ref), timeout=30).uri)
        warm.append(time.perf_counter() - started)

        stub.StopBranch(pb.StopBranchRequest(branch=ref), timeout=60)
        started = time.perf_counter()
        stub.StartBranch(pb.StartBranchRequest(branch=ref), timeout=60)
        _select_one(stub.GetConnection(pb.GetConnectionRequest(branch=ref), timeout=30).uri)
        start.append(time.perf_counter() - started)

        stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref), timeout=60)
        suspended_pss, suspended_processes = cluster_pss(_pgdata(daemon, b))
        started = time.perf_counter()
        stub.ResumeBranch(pb.ResumeBranchRequest(branch=ref), timeout=60)
        _select_one(stub.GetConnection(pb.GetConnectionRequest(branch=ref), timeout=30).uri)
        wake_rpc.append(time.perf_counter() - started)

        if conn.endpoint_uri:
            stub.SuspendBranch(pb.SuspendBranchRequest(branch=ref), timeout=60)
            started = time.perf_counter()
            _select_one(conn.endpoint_uri)
            wake_endpoint.append(time.perf_counter() - started)
    result: dict[str, Any] = {
        "rounds": rounds,
        "warm_connect_seconds": summary(warm),
        "start_rpc_seconds": summary(start),
        "wake_rpc_seconds": summary(wake_rpc),
        "target_p50_seconds": TARGET_P50,
        "running_pss_bytes": running_pss, "running_processes": processes,
        "suspended_pss_bytes": suspended_pss, "suspended_processes": suspended_processes,
        "idle_check_us_per_running_branch": round(check_us, 1),
    }
    if wake_endpoint:
        result["wake_endpoint_seconds"] = summary(wake_endpoint)
    # The daemon's side of each wake: port, ZFS writes and Postgres start, under the lock.
    inside = [float(line.rsplit(" in ", 1)[1].split("s:", 1)[0])
              for line in daemon.log_path.read_text(errors="replace").splitlines()
              if f"({b.id}) running on port" in line]
    if inside:
        result["daemon_start_seconds"] = summary(inside)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with private_daemon("bwk", 57600, "2G") as daemon:
        result = measure(daemon, args.rounds)
    emit("bench_wake", result, args.out)


if __name__ == "__main__":
    main()
