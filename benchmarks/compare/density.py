"""Density: idle nano branches of one database, their real memory, and branch-ready at N.

Memory per branch is read two ways: the PSS of every process of each branch's
cluster (/proc/PID/smaps_rollup; shared memory is split between the processes
that map it, so the sum is what the cluster really costs), and the drop in
MemAvailable, which also counts kernel memory and page cache but moves with
anything else running on the machine.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import log, summary, wait_query
from benchmarks.compare.data import pgbench_init
from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import Daemon, postmasters_under

MB = 1024 * 1024
NAME = "dense"


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def pss_by_cluster(root: Path) -> dict[str, int]:
    """PSS bytes of every Postgres process below `root`, summed per data directory."""
    out: dict[str, int] = {}
    for pid in postmasters_under(root):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # exited meanwhile
        pss = next(int(x.split()[1]) for x in rollup.splitlines() if x.startswith("Pss:"))
        out[cwd] = out.get(cwd, 0) + pss * 1024
    return out


def timed_branch(d: Daemon, name: str) -> tuple[float, str]:
    with d.stub() as s:
        started = time.perf_counter()
        resp = s.CreateBranch(pb.CreateBranchRequest(database=NAME, name=name), timeout=600)
        wait_query(resp.connection.uri)
        return time.perf_counter() - started, resp.branch.id


def delete_branch(d: Daemon, branch_id: str) -> None:
    with d.stub() as s:
        s.DeleteBranch(pb.DeleteBranchRequest(branch=pb.BranchRef(branch_id=branch_id)),
                       timeout=600)


def fill(d: Daemon, target: int, reserve: int) -> tuple[list[float], str]:
    """Adds branches until `target` run or MemAvailable would drop below `reserve`."""
    times: list[float] = []
    stop_reason = "target reached"
    while len(times) < target:
        # Leave room for one more branch (at most ~200 MB even for a busy one).
        if mem_available() < reserve + 200 * MB:
            stop_reason = "memory reserve reached"
            break
        took, _ = timed_branch(d, f"idle{len(times)}")
        times.append(round(took, 4))
        if len(times) % 10 == 0:
            log(f"density: {len(times)} branches, MemAvailable {mem_available() / MB:.0f} MiB")
    return times, stop_reason


def measure_density(d: Daemon, target: int, probes: int, reserve: int,
                    idle_wait: float) -> dict[str, Any]:
    with d.stub() as s:
        created = s.CreateDatabase(pb.CreateDatabaseRequest(name=NAME, size_class="nano"),
                                   timeout=600)
    try:
        conn = created.connection
        pgbench_init(1, conn.host, conn.port, conn.dbname, conn.password)
        root = d.mount_root / d.pool.name / "db" / created.database.id
        time.sleep(idle_wait)
        avail_before = mem_available()
        times, reason = fill(d, target, reserve)
        time.sleep(idle_wait)  # let start-up work finish, so the branches are idle
        avail_after = mem_available()
        pss = pss_by_cluster(root)
        main_dir = next((k for k in pss if f"/{created.main_branch.id}/" in k + "/"), "")
        branch_pss = [v for k, v in pss.items() if k != main_dir]
        probe = [timed_branch(d, f"probe{i}") for i in range(probes)]
        for _, branch_id in probe:
            delete_branch(d, branch_id)
    finally:
        with d.stub() as s:
            s.DeleteDatabase(pb.DeleteDatabaseRequest(database=NAME), timeout=900)
    return density_result(times, reason, branch_pss, avail_before, avail_after,
                          [t for t, _ in probe], reserve)


def density_result(times: list[float], reason: str, branch_pss: list[int], avail_before: int,
                   avail_after: int, probe: list[float], reserve: int) -> dict[str, Any]:
    count = len(times)
    pss_each = int(statistics.mean(branch_pss)) if branch_pss else 0
    avail_each = (avail_before - avail_after) // count if count else 0
    # The larger of the two readings, so the extrapolation errs on the safe side.
    per_branch = max(pss_each, avail_each, 1)
    return {
        "size_class": "nano", "branches_running": count, "stopped_because": reason,
        "memory_per_branch_pss_bytes": pss_each,
        "memory_per_branch_memavailable_bytes": avail_each,
        "memavailable_before_bytes": avail_before, "memavailable_after_bytes": avail_after,
        "extrapolated_max_branches": avail_before // per_branch,
        "extrapolated_max_branches_keeping_reserve": max(0, avail_before - reserve)
        // per_branch,
        "reserve_bytes": reserve,
        "extrapolated": True,
        "branch_ready_while_filling_seconds": summary(times) if times else None,
        "branch_ready_at_n_seconds": summary(probe) if probe else None,
        "samples": {"while_filling": times, "at_n": [round(t, 4) for t in probe],
                    "pss_per_branch": branch_pss},
    }
