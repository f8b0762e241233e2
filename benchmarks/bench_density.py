"""Density: what a branch costs, and whether operations stay flat, at 1, 100 and 1,000 branches.

One throwaway cygnetd on its own file-backed zfs-fuse pool, one nano
database, filled with branches through the API (CreateBranch, then
SuspendBranch for all but `--running` of them). Beyond `--api-fill` branches
(default: all through the API) the rest are made by hand as suspended branches
are in ZFS (a branch point on main and a clone with a branch's properties, no
port, unmounted: parked), and the daemon is restarted to read them, as it
reads any host at start: on a busy 2-core machine a create with a suspend
costs 3-6 s, so 900 more would take an hour. At each level it measures, in
the same run:

- CreateBranch p50 (a branch made and deleted again, so the level holds),
  against the raw floor at the same dataset count: `zfs snapshot` + `zfs
  clone` (which mounts it) of main, then destroy, by hand;
- ListBranches of the database, GetBranch, and ResumeBranch of a suspended
  (parked) one: the wake, its mount included;
- memory: PSS per running cluster, the daemon's RSS and what each suspended
  branch adds to it; disk: ZFS `used` per branch (its dataset and branch point);
- at the last level: a daemon restart (SIGTERM, start, SERVING) adopting
  every running postmaster.

    .venv/bin/python -m benchmarks.bench_density                 # 1, 100, 1000
    .venv/bin/python -m benchmarks.bench_density --api-fill 100  # 900 of them by hand
    .venv/bin/python -m benchmarks.bench_density --small         # 1 and 4: the suite's run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks.common import emit, log, summary, timed
from benchmarks.compare.density import pss_by_cluster
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.zfs import mount_lock
from tests.harness import WORK, Daemon, FilePool, postmaster_pids

DB = "dense"
MB = 1024 * 1024


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Rig:
    """The daemon, its database, and the branches made so far."""

    def __init__(self, d: Daemon, running: int) -> None:
        self.d = d
        self.running = running
        self.branches: list[str] = []  # ids, oldest first
        self.suspended: list[str] = []
        self.by_hand: set[str] = set()  # never started: they cost ZFS nothing of their own
        with d.stub() as s:
            made = s.CreateDatabase(pb.CreateDatabaseRequest(name=DB, size_class="nano"),
                                    timeout=600)
        self.main = made.main_branch
        self.root = f"{d.pool.name}/cygnet/db/{made.database.id}"
        self.main_dataset = f"{self.root}/{self.main.id}"

    def count(self) -> int:
        return 1 + len(self.branches)

    def add(self) -> None:
        name = f"b{len(self.branches)}"
        with self.d.stub() as s:
            b = s.CreateBranch(pb.CreateBranchRequest(database=DB, name=name), timeout=600)
            self.branches.append(b.branch.id)
            if len(self.branches) > self.running - 1:  # main runs too
                s.SuspendBranch(pb.SuspendBranchRequest(
                    branch=pb.BranchRef(branch_id=b.branch.id)), timeout=600)
                self.suspended.append(b.branch.id)

    def fill(self, target: int, api_fill: int) -> None:
        started = time.monotonic()
        while self.count() < min(target, api_fill):
            self.add()
            if len(self.branches) % 100 == 0:
                log(f"{self.count()} branches ({time.monotonic() - started:.0f}s)")
        if self.count() < target:
            made = make_suspended_by_hand(self.d, self.root, self.main.id, self.count(),
                                          target - self.count())
            self.branches += made
            self.suspended += made
            self.by_hand.update(made)
            log(f"{self.count()} branches, {len(made)} by hand; restarting the daemon")
            self.d.stop()
            # The catalog kept on disk knows nothing of those: read ZFS whole.
            (self.d.base / "state" / "catalog.json").unlink(missing_ok=True)
            self.d.start(timeout=600)

    def create_probe(self, i: int) -> tuple[float, float]:
        """CreateBranch, then DeleteBranch of it: the seconds of each."""
        with self.d.stub() as s:
            t0 = time.perf_counter()
            b = s.CreateBranch(pb.CreateBranchRequest(database=DB, name=f"probe{i}"),
                               timeout=600)
            t1 = time.perf_counter()
            s.DeleteBranch(pb.DeleteBranchRequest(branch=pb.BranchRef(branch_id=b.branch.id)),
                           timeout=600)
        return t1 - t0, time.perf_counter() - t1

    def raw_probe(self) -> float:
        """zfs snapshot + clone (mounted by zfs) of main at the same dataset count."""
        tag = "raw" + secrets.token_hex(3)
        t0 = time.perf_counter()
        zfs("snapshot", f"{self.main_dataset}@{tag}")
        zfs("clone", f"{self.main_dataset}@{tag}", f"{self.root}/{tag}")
        took = time.perf_counter() - t0
        destroy(f"{self.root}/{tag}")
        destroy(f"{self.main_dataset}@{tag}")
        return took


def zfs(*args: str) -> str:
    done = subprocess.run(mount_lock.wrapped(["zfs", *args]), capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"zfs {args[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def make_suspended_by_hand(d: Daemon, root: str, main_id: str, first: int, count: int
                           ) -> list[str]:
    """`count` suspended branches of main as ZFS holds them: a branch point each and a
    clone with a branch's properties and no port, unmounted (parked), one command at
    a time. Returns their ids."""
    main = f"{root}/{main_id}"
    database_id = root.rsplit("/", 1)[1]
    ids, commands = [], []
    for i in range(count):
        branch_id, snap_id = "br" + secrets.token_hex(5), "sn" + secrets.token_hex(5)
        props = {"kind": "branch", "id": branch_id, "name": f"h{first + i}",
                 "database": database_id, "parent": main_id,
                 "desired": "suspended", "phase": "ready", "created": f"{time.time():.3f}"}
        snap = f"{main}@{snap_id}"
        commands.append((["zfs", "snapshot", "-o", "cygnet:snapshot-kind=branch-point",
                          "-o", f"cygnet:id={snap_id}", "-o", f"cygnet:name=h{first + i}",
                          snap],
                         ["zfs", "clone", *[a for k, v in props.items()
                                            for a in ("-o", f"cygnet:{k}={v}")],
                          snap, f"{root}/{branch_id}"]))
        ids.append(branch_id)
    # One at a time: zfs-fuse stopped answering altogether (every pool on the host)
    # while eight of these ran at once.
    for snapshot, clone in commands:
        zfs(*snapshot[1:])
        try:
            zfs(*clone[1:])
        except RuntimeError as exc:
            # zfs-fuse sometimes fails the mount of a clone it made ("Input/output
            # error") when many mounts are busy; the clone is there: mount it again.
            if "cannot mount" not in str(exc):
                raise
            log(f"retrying the mount of {clone[-1]} (zfs-fuse maps: {zfs_fuse_maps()}): {exc}")
            mount_again(clone[-1])
        unmount(clone[-1])
    return ids


def unmount(dataset: str) -> None:
    """zfs-fuse reports a fresh mount busy for a moment: retried, as cygnetd does."""
    for _ in range(50):
        if subprocess.run(mount_lock.wrapped(["zfs", "umount", dataset]),
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    zfs("umount", dataset)


def mount_again(dataset: str, attempts: int = 10) -> None:
    for attempt in range(attempts):
        time.sleep(0.5 * (attempt + 1))
        done = subprocess.run(["zfs", "mount", dataset], capture_output=True, text=True,
                              timeout=600)
        if done.returncode == 0 or "already mounted" in done.stderr:
            return
    zfs("mount", dataset)


def destroy(name: str) -> None:
    """zfs-fuse reports a fresh mount busy for a moment: retried, as cygnetd does."""
    for _ in range(50):
        if subprocess.run(["zfs", "destroy", name], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    zfs("destroy", name)


def reads(rig: Rig, repeat: int) -> dict[str, Any]:
    with rig.d.stub() as s:
        listing = [timed(lambda: s.ListBranches(pb.ListBranchesRequest(database=DB),
                                                timeout=600)) for _ in range(repeat)]
        n = len(s.ListBranches(pb.ListBranchesRequest(database=DB)).branches)
        one = pb.BranchRef(branch_id=rig.branches[-1] if rig.branches else rig.main.id)
        get = [timed(lambda: s.GetBranch(pb.GetBranchRequest(branch=one))) for _ in range(repeat)]
    return {"branches_listed": n, "list_branches_seconds": summary(listing),
            "get_branch_seconds": summary(get)}


def wake_suspended(rig: Rig, probes: int) -> dict[str, float] | None:
    """ResumeBranch of suspended (parked) branches, then SuspendBranch again (untimed)."""
    if not rig.suspended:
        return None
    times = []
    with rig.d.stub() as s:
        for branch_id in rig.suspended[:probes]:
            ref = pb.BranchRef(branch_id=branch_id)
            t0 = time.perf_counter()
            s.ResumeBranch(pb.ResumeBranchRequest(branch=ref), timeout=600)
            times.append(time.perf_counter() - t0)
            s.SuspendBranch(pb.SuspendBranchRequest(branch=ref), timeout=600)
    return summary(times)


def disk_per_branch(rig: Rig) -> dict[str, float]:
    out = zfs("get", "-H", "-p", "-r", "-o", "name,value", "used", rig.root)
    used = {n: int(v) for n, v in (line.split("\t") for line in out.splitlines())}
    by_id = {n.rsplit("/", 1)[-1]: v for n, v in used.items()}
    datasets = [by_id[i] for i in rig.branches if i in by_id]
    # A branch made, started and suspended through the API: what a parked
    # preview branch costs (the mean over all also counts those made by hand).
    suspended = [by_id[i] for i in rig.suspended if i in by_id and i not in rig.by_hand]
    points = [v for n, v in used.items() if n.startswith(rig.main_dataset + "@")]
    if not datasets:
        return {}
    return {"dataset_used_mib": _mean_mib(datasets),
            "suspended_through_api_used_mib": _mean_mib(suspended),
            "branch_point_used_mib": _mean_mib(points)}


def _mean_mib(values: list[int]) -> float:
    return round(sum(values) / max(1, len(values)) / MB, 3)


def level(rig: Rig, probes: int) -> dict[str, Any]:
    log(f"measuring at {rig.count()} branches")
    assert rig.d.proc is not None
    create, delete, raw = [], [], []
    for i in range(probes):  # interleaved, so both see the same machine
        made, deleted = rig.create_probe(i)
        create.append(made)
        delete.append(deleted)
        raw.append(rig.raw_probe())
    pss = pss_by_cluster(rig.d.mount_root)
    return {
        "branches": rig.count(), "running": len(pss), "suspended": len(rig.suspended),
        "create_branch_seconds": summary(create), "raw_snapshot_clone_seconds": summary(raw),
        "delete_branch_seconds": summary(delete),
        **reads(rig, max(5, probes)),
        "wake_suspended_branch_seconds": wake_suspended(rig, min(5, probes)),
        "pss_per_running_branch_mib": round(sum(pss.values()) / max(1, len(pss)) / MB, 2),
        "daemon_rss_mib": round(rss(rig.d.proc.pid) / MB, 1),
        "disk_per_branch": disk_per_branch(rig),
        "zfs_fuse_maps": zfs_fuse_maps(),
        "mounted_filesystems": mounted_filesystems(rig.d.pool.name),
    }


def mounted_filesystems(pool: str) -> int:
    """The pool's mounted filesystems: zfs-fuse serves at most 1,000 (parked branches
    hold none)."""
    out = zfs("get", "-H", "-r", "-o", "value", "mounted", pool)
    return sum(1 for line in out.splitlines() if line.strip() == "yes")


def zfs_fuse_maps() -> int:
    """Memory maps of the zfs-fuse process (0 on kernel ZFS): its mounts fail near
    vm.max_map_count (docs/operations.md, "ZFS settings")."""
    found = subprocess.run(["pgrep", "-x", "zfs-fuse"], capture_output=True, text=True)
    pids = found.stdout.split()
    if not pids:
        return 0
    with open(f"/proc/{pids[0]}/maps") as f:
        return sum(1 for _ in f)


def restart(rig: Rig, how: str) -> dict[str, Any]:
    """A stop, then a start until SERVING. `how`: "stop" (SIGTERM), "kill" (kill -9:
    the catalog kept on disk, with the journal of the writes since its last save),
    "reboot" (SIGTERM, then the kept catalog's boot id changed, which is what a
    reboot changes for it: a clean stop's save serves; the postmasters, which a
    real reboot would stop, still run here and are adopted), or "cold" (SIGTERM,
    then the kept catalog deleted: ZFS read whole first, as after a crash of the
    host). With a kept catalog ZFS is then read whole in the background
    (`catalog_fresh_seconds`)."""
    before = postmaster_pids(rig.d.mount_root)
    assert rig.d.proc is not None
    if how == "kill":
        rig.d.kill9()
    else:
        rig.d.stop()
    rig.d.proc.wait(timeout=600)  # the old daemon gone: the new one's start alone is timed
    state = rig.d.base / "state"
    was_saved = (state / "catalog.json").exists()
    if how == "cold":
        for name in ("catalog.json", "catalog.journal"):
            (state / name).unlink(missing_ok=True)
    if how == "reboot":
        kept = state / "catalog.json"
        kept.write_text(json.dumps(json.loads(kept.read_text()) | {"boot": "before"}))
    mark = rig.d.log_path.stat().st_size
    t0 = time.perf_counter()
    rig.d.start(timeout=600)
    took = time.perf_counter() - t0
    fresh = wait_for_log(rig.d.log_path, mark, "resync took", 600) - t0 if how != "cold" else took
    # Kept for reading where the start went (the run's directory is removed).
    with rig.d.log_path.open("rb") as f:
        f.seek(mark)
        (WORK / f"density-restart-{how}.log").write_bytes(f.read())
    after = postmaster_pids(rig.d.mount_root)
    assert rig.d.proc is not None
    return {"seconds_to_serving": round(took, 3), "catalog_kept": was_saved,
            "catalog_fresh_seconds": round(fresh, 3), "postmasters": len(before),
            "adopted_same_pids": before == after,
            "daemon_rss_mib_after": round(rss(rig.d.proc.pid) / MB, 1)}


def wait_for_log(path: Path, offset: int, text: str, timeout: float) -> float:
    """perf_counter() when `text` first shows in the log past `offset`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with path.open("rb") as f:
            f.seek(offset)
            if text.encode() in f.read():
                return time.perf_counter()
        time.sleep(0.1)
    raise RuntimeError(f"{text!r} not logged within {timeout}s")


def run(sizes: list[int], running: int, probes: int, pool_size: str,
        api_fill: int) -> dict[str, Any]:
    pool = FilePool.create(pool_size)
    base = WORK / ("density-" + secrets.token_hex(3))
    # Above the ephemeral range (32768-60999 here), clear of the test daemons' ports.
    low = 61000
    high = low + max(sizes) + probes + 50
    d = Daemon(pool, base, port_min=low, extra_args=["--port-range", f"{low}-{high}"])
    try:
        d.start()
        rig = Rig(d, running)
        levels = []
        for n in sizes:
            rig.fill(n, api_fill)
            try:
                levels.append(level(rig, probes))
            except grpc.RpcError:
                log(f"the daemon's log ends:\n{d.tail(80)}")
                raise
        first, last = levels[0], levels[-1]
        ratio = (last["create_branch_seconds"]["p50"] / first["create_branch_seconds"]["p50"])
        raw_ratio = (last["raw_snapshot_clone_seconds"]["p50"]
                     / first["raw_snapshot_clone_seconds"]["p50"])
        grown = (last["daemon_rss_mib"] - first["daemon_rss_mib"]) / max(
            1, last["branches"] - first["branches"])
        return {
            "machine": f"{os.cpu_count()} cores, zfs-fuse on a file-backed pool",
            "levels": levels, "restart": restart(rig, "stop"),
            "restart_killed": restart(rig, "kill"),
            "restart_reboot": restart(rig, "reboot"),
            "restart_cold": restart(rig, "cold"),
            "made_through_api": min(max(sizes), api_fill),
            "create_p50_ratio_last_to_first": round(ratio, 3),
            "raw_p50_ratio_last_to_first": round(raw_ratio, 3),
            "daemon_rss_per_branch_kib": round(grown * 1024, 1),
            "targets": {"create_p50_ratio": 1.2, "list_branches_seconds": 0.05,
                        "restart_seconds": 10, "daemon_rss_mib": 200},
        }
    finally:
        d.stop()
        with contextlib.suppress(OSError):  # kept for reading where the time went
            shutil.copyfile(d.log_path, WORK / "density-daemon.log")
        pool.destroy(d.mount_root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1,100,1000", help="branch counts to measure at")
    p.add_argument("--running", type=int, default=50, help="branches left running (main too)")
    p.add_argument("--probes", type=int, default=15, help="timed creates per level")
    p.add_argument("--pool-size", default="12G")
    p.add_argument("--api-fill", type=int, default=10**9,
                   help="branches made through the API; the rest by hand (see above)")
    p.add_argument("--small", action="store_true", help="1 and 4 branches: the suite's smoke run")
    p.add_argument("--out", type=Path, default=None, help="directory for density.json")
    args = p.parse_args()
    if args.small:
        args.sizes, args.running, args.probes, args.pool_size = "1,4", 2, 2, "2G"
    sizes = sorted({int(x) for x in args.sizes.split(",") if x})
    result = run(sizes, args.running, args.probes, args.pool_size, args.api_fill)
    emit("density", result, **({"out": args.out} if args.out else {}))


if __name__ == "__main__":
    main()
