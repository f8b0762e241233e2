"""Reboot drill with a real zfs-fuse restart (not run by the suite).

    .venv/bin/python -m benchmarks.drill_reboot

It restarts zfs-fuse, which every pool on the machine shares, so it refuses to
run while any other pool is imported: run it on a machine of its own. The
suite's drill (tests/integration/test_reboot.py) re-imports its pool instead.

A cygnetd on a pool that is in zfs-fuse's pool cache, a database with
branches (main and dev running, old stopped), each with a row of its own.
Then: SIGKILL the daemon and every postmaster, stop zfs-fuse, start it (it
re-imports the pool from its cache, unmounted), start cygnetd, and time
until each branch that should run answers with its row. Prints JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from cygnet.api.v1 import agent_pb2 as pb
from tests.harness import REPO, WORK, Daemon, FilePool, postmaster_pids, query, run

ZFS_FUSE_PID = Path("/var/run/zfs-fuse.pid")


def _pools() -> list[str]:
    return run("zpool", "list", "-H", "-o", "name").stdout.split()


def _restart_zfs_fuse() -> None:
    pid = int(ZFS_FUSE_PID.read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("zfs-fuse did not stop")
        time.sleep(0.1)
    subprocess.run([str(REPO / "scripts" / "start-zfs")], check=True, timeout=60)


def _branch_answers(d: Daemon, branch_id: str, row: str) -> bool:
    try:
        with d.stub() as s:
            conn = s.GetConnection(pb.GetConnectionRequest(
                branch=pb.BranchRef(branch_id=branch_id)), timeout=5)
        return (row,) in query(conn, "select v from t")
    except Exception:
        return False


def main() -> None:
    if _pools():
        raise SystemExit(f"other pools are imported ({', '.join(_pools())}): this drill "
                         "restarts zfs-fuse, run it on a machine of its own")
    name = "cyd" + secrets.token_hex(4)
    image = WORK / "pools" / f"{name}.img"
    image.parent.mkdir(parents=True, exist_ok=True)
    run("truncate", "-s", "2G", str(image))
    run("zpool", "create", "-m", "none", name, str(image))  # in the cache, as on a host
    pool = FilePool(name, image)
    base = WORK / ("drill" + secrets.token_hex(3))
    d = Daemon(pool, base, port_min=58800, extra_args=["--listen", ""])
    try:
        d.start()
        ids: dict[str, str] = {}
        with d.stub() as s:
            db = s.CreateDatabase(pb.CreateDatabaseRequest(name="drill"), timeout=120)
            ids["main"] = db.main_branch.id
            query(db.connection, "create table t (v text); insert into t values ('main')")
            for branch in ("dev", "old"):
                made = s.CreateBranch(pb.CreateBranchRequest(database="drill", name=branch),
                                      timeout=120)
                ids[branch] = made.branch.id
                query(made.connection, f"insert into t values ('{branch}')")
            s.StopBranch(pb.StopBranchRequest(branch=pb.BranchRef(branch_id=ids["old"])))
        d.kill9()
        for pid in postmaster_pids(d.mount_root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _restart_zfs_fuse()
        started = time.monotonic()
        d.start()
        serving = time.monotonic() - started
        answered: dict[str, float] = {}
        while len(answered) < 2 and time.monotonic() - started < 60:
            for branch in ("main", "dev"):
                if branch not in answered and _branch_answers(d, ids[branch], branch):
                    answered[branch] = round(time.monotonic() - started, 3)
            time.sleep(0.05)
        with d.stub() as s:
            old = s.GetBranch(pb.GetBranchRequest(branch=pb.BranchRef(branch_id=ids["old"])))
        print(json.dumps({"serving_after_s": round(serving, 3), "answered_after_s": answered,
                          "old_state": pb.BranchState.Name(old.state)}, indent=2))
    finally:
        d.stop()
        pool.destroy(d.mount_root)


if __name__ == "__main__":
    main()
