"""WAL archiving: its cost per segment, and its overhead under pgbench.

    .venv/bin/python -m benchmarks.bench_archive           # scale 50, 4 clients, 3 pairs
    .venv/bin/python -m benchmarks.bench_archive --small   # what the suite runs

1. Per segment: the C archive program (what Postgres runs) against a Python
   archive_command doing the same copy, fsync and rename, on 16 MiB segments.
2. pgbench (scale 50, 4 clients) on a database whose main archives, against
   the same database with archiving off, interleaved pairs of runs (the
   machine's run-to-run noise is 20-30%). Archive lag per segment: from its
   last write in pg_wal (the repository object keeps that mtime) to its
   arrival in the repository.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import bench_daemon, emit, log, summary
from cygnet.agent.archive import PROGRAM
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.wal.lsn import SEGMENT_SIZE
from tests.harness import Daemon

PGBIN = Path("/usr/lib/postgresql/15/bin")
# What a Python archive_command must do at least: start, copy, fsync, rename.
PY_ARCHIVE = """
import os, shutil, sys
spool, src, name = sys.argv[1:4]
tmp = os.path.join(spool, "." + name + ".tmp")
with open(src, "rb") as i, open(tmp, "wb") as o:
    shutil.copyfileobj(i, o, 1 << 20)
    o.flush(); os.fsync(o.fileno())
os.rename(tmp, os.path.join(spool, name))
fd = os.open(spool, os.O_RDONLY); os.fsync(fd); os.close(fd)
"""


def per_segment(count: int) -> dict[str, Any]:
    """ms per 16 MiB segment, each way, alternating so both see the same cache state."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        root = Path(tmp)
        src = root / "000000010000000000000001"
        src.write_bytes(os.urandom(SEGMENT_SIZE // 2) + bytes(SEGMENT_SIZE // 2))
        ways: dict[str, Callable[[Path, str], list[str]]] = {
            "c_program": lambda spool, name: [str(PROGRAM), "archive", str(spool),
                                              str(1 << 40), str(src), name],
            "python_minimal": lambda spool, name: [sys.executable, "-S", "-c", PY_ARCHIVE,
                                                   str(spool), str(src), name],
            # A realistic one imports its package first (the repository, settings...).
            "python_with_cygnet": lambda spool, name: [
                sys.executable, "-c", "import cygnet.agent.archive\n" + PY_ARCHIVE,
                str(spool), str(src), name],
        }
        samples: dict[str, list[float]] = {k: [] for k in ways}
        for i in range(count):
            for way, argv in ways.items():
                spool = root / way
                spool.mkdir(exist_ok=True)
                name = f"{i + 2:024X}"
                started = time.perf_counter()
                subprocess.run(argv(spool, name), check=True, timeout=60)
                samples[way].append((time.perf_counter() - started) * 1000)
                (spool / name).unlink()
    out = {way: summary(s) for way, s in samples.items()}
    c = out["c_program"]["p50"]
    for way in ("python_minimal", "python_with_cygnet"):
        out[way]["x_c_program"] = round(out[way]["p50"] / c, 2)
    return {"ms_per_segment": out,
            "segments_per_second_p50": {w: round(1000 / o["p50"], 1) for w, o in out.items()}}


def set_archiving(d: Daemon, db: pb.CreateDatabaseResponse, on: bool) -> None:
    dataset = f"{d.pool.name}/cygnet/db/{db.database.id}/{db.main_branch.id}"
    subprocess.run(["zfs", "set", f"cygnet:archive={'on' if on else 'off'}", dataset],
                   check=True)
    ref = pb.BranchRef(branch_id=db.main_branch.id)
    with d.stub() as s:
        s.StopBranch(pb.StopBranchRequest(branch=ref), timeout=120)
        s.StartBranch(pb.StartBranchRequest(branch=ref), timeout=120)


def pgbench(uri: str, seconds: int, clients: int) -> float:
    done = subprocess.run([str(PGBIN / "pgbench"), "-n", "-c", str(clients), "-j", "2",
                           "-T", str(seconds), uri], check=True, capture_output=True,
                          text=True, timeout=seconds * 4 + 120)
    match = re.search(r"tps = ([0-9.]+)", done.stdout)
    assert match, done.stdout
    return float(match.group(1))


def lags(d: Daemon, branch_id: str, since: float) -> list[float]:
    """Seconds from each segment's last write to its arrival in the repository."""
    out = []
    for g in (d.base / "state" / "backups" / "wal" / branch_id).glob("g*"):
        for obj in g.glob("*.zst"):
            st = obj.stat()
            if st.st_mtime >= since:
                out.append(max(0.0, st.st_ctime - st.st_mtime))
    return out


def overhead(scale: int, seconds: int, pairs: int, clients: int) -> dict[str, Any]:
    with bench_daemon("12G" if scale >= 10 else "3G", 57200) as d:
        with d.stub() as s:
            db = s.CreateDatabase(pb.CreateDatabaseRequest(name="bench", size_class="medium"),
                                  timeout=300)
        log(f"pgbench -i -s {scale}")
        subprocess.run([str(PGBIN / "pgbench"), "-i", "-q", "-s", str(scale),
                        db.connection.uri], check=True, capture_output=True, timeout=3600)
        runs: dict[str, list[float]] = {"on": [], "off": []}
        lag: list[float] = []
        for i in range(pairs):
            for mode in (("off", "on") if i % 2 else ("on", "off")):
                set_archiving(d, db, mode == "on")
                started = time.time()
                tps = pgbench(db.connection.uri, seconds, clients)
                runs[mode].append(tps)
                if mode == "on":
                    time.sleep(1.0)  # the last segments' ingestion
                    lag += lags(d, db.main_branch.id, started)
                log(f"pair {i + 1}: archiving {mode}: {tps:.0f} tps")
    ratio = statistics.median(runs["on"]) / statistics.median(runs["off"])
    # Each pair ran back to back: its ratio cancels the slower drifts of a shared host.
    pair_ratios = [round(on / off, 3) for on, off in zip(runs["on"], runs["off"], strict=True)]
    ordered = sorted(lag) or [0.0]
    return {"scale": scale, "clients": clients, "seconds_per_run": seconds, "pairs": pairs,
            "tps_on": runs["on"], "tps_off": runs["off"],
            "tps_ratio_median": round(ratio, 3), "tps_ratio_pairs": pair_ratios,
            "tps_ratio_pairs_median": statistics.median(pair_ratios), "target_ratio": 0.95,
            "segments_archived": len(lag),
            "archive_lag_seconds": {"p50": round(statistics.median(ordered), 3),
                                    "p99": round(ordered[min(len(ordered) - 1,
                                                             int(0.99 * len(ordered)))], 3),
                                    "max": round(ordered[-1], 3)},
            "target_lag_p99_seconds": 2.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="a few seconds, for the suite")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.small:
        result = {"per_segment": per_segment(3),
                  "pgbench": overhead(scale=1, seconds=6, pairs=1, clients=2)}
    else:
        result = {"per_segment": per_segment(20),
                  "pgbench": overhead(scale=50, seconds=60, pairs=3, clients=4)}
    name = "archive_small" if args.small else "archive"
    emit(name, result, args.out)


if __name__ == "__main__":
    main()
