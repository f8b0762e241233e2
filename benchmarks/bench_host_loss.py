"""Host-loss drill: RPO and RTO of a database restored on another host from the
object store alone (docs/durability.md, "Rehearsing a host loss").

    .venv/bin/python -m benchmarks.bench_host_loss            # ~2 GB (pgbench scale 130)
    .venv/bin/python -m benchmarks.bench_host_loss --small    # ~100 MB, what the suite runs

Hosts A and B are cygnetds in network namespaces of their own, each joined to
the machine's namespace by a veth pair; SeaweedFS listens on the machine's end
of B's pair, and A reaches it by a host route. Every setting is the default
but the off-host repository's. On A: a database loaded by `pgbench -i`, one
full backup (which reaches the bucket), then a write load: pgbench at a fixed
rate, and a ledger client inserting sequence numbers one commit at a time and
recording each acknowledged commit. Then A is destroyed: cygnetd and its
postmasters killed with SIGKILL, its pool destroyed, its state directory and
namespace deleted. B restores the database with `RestoreDatabase(from_host=
"host-a")` to the newest archived point.

RPO: acknowledged ledger commits missing on B, and the time between the newest
one B has and the newest acknowledged. RTO: from the destruction to B's first
answer (B was already running, as a standby host is). Baseline in the same
run: a plain boto3 download of every object the restore fetched (the floor of
fetching them, no decryption, no restore, no replay).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from benchmarks.common import emit, log
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import backup_pb2 as bpb
from tests.harness import WORK, Daemon, FilePool, postmasters_under, query, run
from tests.integration.backup_helpers import backups, create_backup
from tests.leftovers import destroy_pool
from tests.s3_helpers import Seaweed

PGBIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Net:
    """Namespaces `hlTAG-a` and `hlTAG-b`, each on a /30 veth link to the machine."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    octet: int = field(default_factory=lambda: secrets.randbelow(250) + 2)
    made: list[str] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"hl{self.tag}-{host}"

    def addr(self, host: str, side: str) -> str:
        """side 'root' (the machine's end) or 'ns' (the host's)."""
        base = {"a": 0, "b": 4}[host]
        return f"10.79.{self.octet}.{base + (1 if side == 'root' else 2)}"

    @property
    def store_ip(self) -> str:
        return self.addr("b", "root")  # outlives A's link

    def open(self) -> Net:
        for host in ("a", "b"):
            ns, outer = self.ns(host), f"hl{self.tag}{host}"
            run("ip", "netns", "add", ns)
            self.made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            run("ip", "addr", "add", f"{self.addr(host, 'root')}/30", "dev", outer)
            run("ip", "link", "set", outer, "up")
            run("ip", "-n", ns, "addr", "add", f"{self.addr(host, 'ns')}/30", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", self.ns("a"), "route", "add", f"{self.store_ip}/32", "dev", "eth0")
        return self

    def drop(self, host: str) -> None:
        ns = self.ns(host)
        if ns in self.made:
            run("ip", "netns", "del", ns, check=False)  # its veth pair goes with it
            self.made.remove(ns)

    def close(self) -> None:
        for host in ("a", "b"):
            self.drop(host)


class NetSeaweed(Seaweed):
    """SeaweedFS bound to one address of the machine's namespace."""

    ip: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.ports['s3.port']}"

    def argv(self) -> list[str]:
        return [a.replace("127.0.0.1", self.ip) for a in super().argv()]


class Ledger(threading.Thread):
    """Inserts 1, 2, 3, ... one autocommit transaction each; `acks` holds every
    acknowledged commit with the time its acknowledgement arrived."""

    def __init__(self, uri: str) -> None:
        super().__init__(daemon=True)
        self.uri = uri
        self.attempted = 0
        self.acks: list[tuple[int, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(psycopg.Error, OSError), \
                psycopg.connect(self.uri, autocommit=True, connect_timeout=10) as conn:
            while not self.stop.is_set():
                self.attempted += 1
                conn.execute("insert into ledger (seq) values (%s)", (self.attempted,))
                self.acks.append((self.attempted, time.time()))


def _host(net: Net, name: str, store: Seaweed, size: str, port_min: int) -> Daemon:
    base = WORK / f"hl-{net.tag}-{name}"
    base.mkdir(parents=True, exist_ok=True)
    settings = base / "cygnetd.toml"
    settings.write_text(store.settings(host_id=f"host-{name}"))
    settings.chmod(0o600)
    address = net.addr(name, "ns")
    return Daemon(FilePool.create(size), base, port_min=port_min, netns=net.ns(name),
                  extra_args=["--postgres-listen", address, "--advertise-host", address,
                              "--config", str(settings)])


def _pg_env(uri: str) -> dict[str, str]:
    """libpq's environment for a connection string: no password on a command line."""
    u = urlsplit(uri)
    return {**os.environ, "PGHOST": u.hostname or "", "PGPORT": str(u.port or 5432),
            "PGUSER": unquote(u.username or ""), "PGPASSWORD": unquote(u.password or ""),
            "PGDATABASE": u.path.lstrip("/") or "postgres"}


def destroy(a: Daemon, net: Net) -> None:
    """Host A is lost: SIGKILL for cygnetd and postmasters, pool, state and network gone."""
    a.kill9()
    for pid in postmasters_under(a.mount_root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while postmasters_under(a.mount_root) and time.monotonic() < deadline:
        time.sleep(0.05)
    destroy_pool(a.pool.name, tries=50)
    a.pool.image.unlink(missing_ok=True)
    shutil.rmtree(a.base, ignore_errors=True)
    net.drop("a")


@contextlib.contextmanager
def rig(size: str) -> Iterator[tuple[Net, NetSeaweed, Daemon, Daemon]]:
    net = Net().open()
    store = NetSeaweed(WORK / f"hl-{net.tag}-s3")
    store.ip = net.store_ip
    daemons: list[Daemon] = []
    try:
        store.start()
        store.make_bucket()
        daemons += [_host(net, "a", store, size, 59000), _host(net, "b", store, size, 59200)]
        # One after the other: zfs-fuse (one daemon for every pool on the machine)
        # stopped answering when two cygnetds made their first datasets at once
        # (`zfs create POOL/cygnet/templates` hung, as in the fleet tests).
        for d in daemons:
            d.start()
        yield net, store, daemons[0], daemons[1]
    finally:
        for d in daemons:
            d.stop()
            if d.base.exists():
                d.pool.destroy(d.mount_root)
                shutil.rmtree(d.base, ignore_errors=True)
        store.stop()
        shutil.rmtree(store.base, ignore_errors=True)
        net.close()


def _wait_backup_remote(a: Daemon, backup_id: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = backups(a).ListBackups(bpb.ListBackupsRequest(remote=True), timeout=60)
        if any(b.id == backup_id for b in listing.backups):
            return
        time.sleep(0.5)
    raise AssertionError(f"backup {backup_id} never reached the bucket:\n{a.tail()}")


def prepare(a: Daemon, scale: int) -> tuple[pb.CreateDatabaseResponse, int]:
    """The database on A, loaded and backed up off-host; returns it and its size."""
    with a.stub() as s:
        db = s.CreateDatabase(pb.CreateDatabaseRequest(name="drill"), timeout=300)
    subprocess.run([str(PGBIN / "pgbench"), "-i", "-q", "-s", str(scale)], check=True,
                   capture_output=True, timeout=7200, env=_pg_env(db.connection.uri))
    query(db.connection, "create table ledger (seq bigint primary key, "
                         "at timestamptz not null default clock_timestamp())")
    size = int(str(query(db.connection, "select pg_database_size('postgres')")[0][0]))
    made = create_backup(a, pb.BranchRef(database="drill"))
    _wait_backup_remote(a, made.id)
    return db, size


def load_then_destroy(a: Daemon, net: Net, uri: str, seconds: float, rate: int
                      ) -> tuple[Ledger, float]:
    """Writes for `seconds`, then destroys A under the load; returns the ledger and
    the moment of destruction."""
    ledger = Ledger(uri)
    bench = subprocess.Popen([str(PGBIN / "pgbench"), "-n", "-c", "2", "-j", "1", "-R",
                              str(rate), "-T", str(int(seconds) + 600)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=_pg_env(uri))
    ledger.start()
    try:
        time.sleep(seconds)
        lost_at = time.time()
        destroy(a, net)
    finally:
        bench.kill()
        bench.wait()
        ledger.stop.set()
        ledger.join(30)
    return ledger, lost_at


def restore_on_b(b: Daemon, lost_at: float) -> tuple[pb.CreateDatabaseResponse, float]:
    """The database back on B from the bucket; returns it and the RTO."""
    req = pb.RestoreDatabaseRequest(name="drill", from_host="host-a")
    with b.stub() as s:
        db = s.RestoreDatabase(req, timeout=1800)
    query(db.connection, "select 1")
    return db, time.time() - lost_at


def check(db: pb.CreateDatabaseResponse, ledger: Ledger) -> dict[str, Any]:
    """Safety on B, and the RPO against the ledger."""
    seqs = [int(str(r[0])) for r in query(db.connection, "select seq from ledger order by seq")]
    top = seqs[-1] if seqs else 0
    # A prefix of what was sent: no gap, nothing invented after the restore point
    # (the one commit in flight at the kill may have committed unacknowledged).
    assert seqs == list(range(1, top + 1)), "B's ledger rows are not a prefix"
    assert top <= ledger.attempted, f"B has seq {top}, never sent (sent {ledger.attempted})"
    amcheck = subprocess.run([str(PGBIN / "pg_amcheck"), "--install-missing",
                              "--heapallindexed"], capture_output=True, text=True, timeout=1800,
                             env=_pg_env(db.connection.uri))
    assert amcheck.returncode == 0, f"pg_amcheck: {amcheck.stdout}{amcheck.stderr}"
    times = dict(ledger.acks)
    missing = [seq for seq, _ in ledger.acks if seq > top]
    newest = ledger.acks[-1][1] if ledger.acks else 0.0
    span = newest - times[top] if missing and top in times else (
        newest - ledger.acks[0][1] if missing else 0.0)
    return {"acknowledged_commits": len(ledger.acks), "restored_commits": top,
            "rpo_commits_lost": len(missing), "rpo_seconds": round(span, 3),
            "pg_amcheck": "clean"}


def fetch_floor(store: Seaweed, scratch: Path) -> float:
    """Seconds for plain boto3 to download every object under host-a's prefix."""
    c = store.client()
    keys = [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix="hosts/host-a/") for o in page.get("Contents", [])]
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, key in enumerate(keys):
        c.download_file(store.bucket, key, str(scratch / str(i)))
    took = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    return took


def drill(scale: int, seconds: float, rate: int, size: str,
          also_on_b: Callable[[Daemon, Ledger], None] | None = None) -> dict[str, Any]:
    """The whole drill; `also_on_b` runs on host B after the restore (tests' checks)."""
    with rig(size) as (net, store, a, b):
        log(f"host A: pgbench -i -s {scale}, a backup off-host")
        db, db_size = prepare(a, scale)
        log(f"host A: pgbench -R {rate} and the ledger for {seconds:.0f} s, then destroyed")
        ledger, lost_at = load_then_destroy(a, net, db.connection.uri, seconds, rate)
        assert not a.base.exists() and a.pool.name not in run("zpool", "list", "-H", "-o",
                                                                "name").stdout
        log("host B: restore from the bucket")
        restored, rto = restore_on_b(b, lost_at)
        result = check(restored, ledger)
        floor = fetch_floor(store, b.base / "floor")
        if also_on_b is not None:
            also_on_b(b, ledger)
    return {"database_bytes": db_size, "load_seconds": seconds, "pgbench_rate": rate,
            **result, "rto_seconds": round(rto, 2),
            "baseline_boto3_download_all_seconds": round(floor, 2),
            "targets": {"rpo_seconds": 5.0, "rto_seconds": 60.0}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="~100 MB, what the suite runs")
    p.add_argument("--scale", type=int, default=130)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rate", type=int, default=200)
    args = p.parse_args()
    scale, seconds, size = (6, 10.0, "3G") if args.small else (args.scale, args.seconds, "12G")
    emit("host_loss", drill(scale, seconds, args.rate, size))


if __name__ == "__main__":
    main()
