"""Automatic failover with fencing on three hosts in network namespaces (docs/ha.md).

One database with two synchronous replicas (ANY 1 of two), host lease TTL 3 s.
A client writes a ledger through one libpq multi-host string that lists the
endpoint of every host holding the database, with
target_session_attrs=read-write: the string never changes.

1. Host loss: the primary's cygnetd and postmasters get SIGKILL and its link
   goes down. A replica is promoted after the lease expired; every commit the
   client saw acknowledged is on the new primary (synchronous: 0 lost).
2. Partition: the new primary's link goes down while it runs, its cygnetd
   stopped (SIGSTOP). A client inside its namespace keeps writing with
   synchronous_commit = local (what an asynchronous database acknowledges).
   No commit is acknowledged there after the host's fence deadline; the other
   replica is promoted. Once the host is back, its old primary is rewound and
   rejoins as a replica of the new one (no split brain).
3. The first host comes back without its main's WAL, which pg_rewind needs:
   the old primary is seeded afresh from the current one beside the data it
   had, which is kept as a lost copy.
Timings are printed, not asserted (benchmarks/bench_ha.py measures them).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from cygnet.agent import lease
from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as cpb
from tests.e2e.fleet import HostFleet, endpoint_uri, enter_netns, host_fleet, wait_for
from tests.harness import Daemon, postmasters_under

pytestmark = pytest.mark.integration

TTL = 3.0


@pytest.fixture(scope="module")
def fleet() -> Iterator[HostFleet]:
    with host_fleet(port_base=59700,
                    coordinator_args=("--host-lease-ttl", str(TTL))) as f:
        yield f


def multi_host_uri(f: HostFleet, uri: str, name: str) -> str:
    """The database's string with every host's endpoint and target_session_attrs."""
    return endpoint_uri(f, uri, name, sorted(f.daemons), "&target_session_attrs=read-write")


def every_host_available(f: HostFleet) -> None:
    """Waits until the coordinator sees every host available. After a coordinator
    outage or a cut link, a host's heartbeats back off (up to one interval), so
    it is available again only once its next one lands."""
    wait_for(f.all_available, 60, "every host available")


def replicated_database(f: HostFleet, name: str
                        ) -> tuple[cpb.FleetCreateDatabaseResponse, str]:
    """A nano database with a synchronous replica on every other host: how it was
    made (its first host, its password), and its multi-host string."""
    every_host_available(f)  # an earlier test may have cut one off
    with f.coordinator.stub() as c:
        made = c.CreateDatabase(cpb.FleetCreateDatabaseRequest(
            database=apb.CreateDatabaseRequest(name=name, size_class="nano")), timeout=300)
        first = made.placement.host_id
        for host in sorted(set(f.daemons) - {first}):
            c.CreateReplica(cpb.FleetCreateReplicaRequest(
                database=name, host_id=host, synchronous=True), timeout=300)
    return made, multi_host_uri(f, made.result.connection.uri, name)


def ledger_on(f: HostFleet, name: str, client: ThreadPoolExecutor
              ) -> tuple[cpb.FleetCreateDatabaseResponse, str, Ledger, Future[None]]:
    """A replicated database with a ledger table, and a Ledger writing to it from
    `client` (threads in the client's namespace): made, its string, the ledger, its run."""
    made, uri = replicated_database(f, name)
    client.submit(lambda: psycopg.connect(uri, autocommit=True).execute(
        "CREATE TABLE ledger (seq bigint PRIMARY KEY)")).result(60)
    ledger = Ledger(lambda: psycopg.connect(uri, autocommit=True))
    return made, uri, ledger, client.submit(ledger.run, 0)


class Ledger:
    """Numbered commits, one at a time; `acked` holds (number, CLOCK_BOOTTIME ns)."""

    def __init__(self, connect: object, setup: str = "") -> None:
        self.connect, self.setup = connect, setup
        self.last_error = ""
        self.acked: list[tuple[int, int]] = []
        self.stop = threading.Event()
        self.errors = 0
        self.error_log: list[tuple[int, str]] = []  # (CLOCK_BOOTTIME ns, first line)

    def run(self, start: int) -> None:
        seq = start
        while not self.stop.is_set():
            try:
                with self.connect() as c:  # type: ignore[operator]
                    if self.setup:
                        c.execute(self.setup)
                    while not self.stop.is_set():
                        seq += 1
                        c.execute("INSERT INTO ledger VALUES (%s)", (seq,))
                        self.acked.append((seq, lease.now_ns()))
            except psycopg.Error as exc:
                self.errors, self.last_error = self.errors + 1, str(exc)
                self.error_log.append((lease.now_ns(), str(exc).splitlines()[0][:200]))
                time.sleep(0.05)

    def first_after(self, t_ns: int) -> int | None:
        return next((t for _, t in self.acked if t > t_ns), None)


def _primary(f: HostFleet, name: str) -> str:
    """The catalog's host of the database (the store only: its host may be frozen)."""
    with f.coordinator.stub() as c:
        listed = c.ListDatabases(apb.ListDatabasesRequest(), timeout=30).databases
    return next(str(d.host_id) for d in listed if d.database.name == name)


def _kill_host(d: Daemon, ns: str) -> None:
    """kill -9 of cygnetd and every postmaster with its children, then the link down."""
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGKILL)
    for pid in postmasters_under(d.base):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-P", str(pid)], check=False)
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "down"], check=True)


def _rows(uri: str, pool: ThreadPoolExecutor) -> set[int]:
    def read() -> set[int]:
        with psycopg.connect(uri, autocommit=True) as c:
            return {int(r[0]) for r in c.execute("SELECT seq FROM ledger").fetchall()}
    return pool.submit(read).result(60)


def _acked_between(ledger: Ledger, start_ns: int, end_ns: int) -> int:
    return sum(1 for _, t in ledger.acked if start_ns <= t < end_ns)


def _every_second(ledger: Ledger, start_ns: int, seconds: int, what: str) -> None:
    for k in range(seconds):
        start = start_ns + k * 10**9
        assert _acked_between(ledger, start, start + 10**9) > 0, \
            f"no commit in second {k} {what}: {ledger.last_error}"


def _restart_during_outage(d: Daemon, ledger: Ledger) -> int:
    """cygnetd killed and started again mid-outage: the TTL comes from its lease file,
    so it runs failsafe rounds. If the lease ran out while it was down (a start takes
    1-3 s here, the TTL is 3 s), the primary fenced, came back fenced, and the
    replicas' confirmation lifts the fence. Returns when writes came again (ns)."""
    killed = lease.now_ns()
    d.kill9()
    d.start()
    serving = lease.now_ns()
    wait_for(lambda: ledger.first_after(serving) is not None, 4 * TTL,
             "writes again after the restart, the coordinator still frozen")
    times = [t for _, t in ledger.acked if t > killed - 10**9]
    gap = max((b - a for a, b in itertools.pairwise(times)), default=0) / 1e9
    for t, e in [x for x in ledger.error_log if x[0] > killed][:10]:
        print(f"  +{(t - killed) / 1e9:.2f}s {e}")  # what the client saw meanwhile
    print(f"failsafe: cygnetd restarted in {(serving - killed) / 1e9:.2f}s, "
          f"the longest gap between two commits {gap:.2f}s")
    return lease.now_ns()


def _beside(f: HostFleet, name: str, primary: str, replica: str, client: ThreadPoolExecutor
            ) -> tuple[cpb.FleetCreateDatabaseResponse, str, Ledger, Future[None]]:
    """A second database whose primary runs on `primary` (moved there if placement
    chose another host) with one synchronous replica, on `replica`, and its ledger."""
    with f.coordinator.stub() as c:
        made = c.CreateDatabase(cpb.FleetCreateDatabaseRequest(
            database=apb.CreateDatabaseRequest(name=name, size_class="nano")), timeout=300)
        if made.placement.host_id != primary:
            for _ in c.MoveDatabase(cpb.MoveDatabaseRequest(database=name, to_host=primary),
                                    timeout=300):
                pass
        c.CreateReplica(cpb.FleetCreateReplicaRequest(
            database=name, host_id=replica, synchronous=True), timeout=300)
    uri = multi_host_uri(f, made.result.connection.uri, name)
    client.submit(lambda: psycopg.connect(uri, autocommit=True).execute(
        "CREATE TABLE ledger (seq bigint PRIMARY KEY)")).result(60)
    ledger = Ledger(lambda: psycopg.connect(uri, autocommit=True))
    return made, uri, ledger, client.submit(ledger.run, 0)


def test_failsafe_keeps_a_primary_through_a_coordinator_outage(
        fleet: HostFleet, request: pytest.FixtureRequest) -> None:
    """The coordinator frozen (SIGSTOP) for 4 TTLs and more: every replica confirms the
    primaries (failsafe), which keep writing, also after cygnetd on their host is
    killed and started again meanwhile; nothing fails over when it wakes. Frozen again
    with one replica's host cut off: that replica cannot confirm, and the primary of its
    database fences at its deadline; it writes again once the coordinator is back. A
    second database on the same primary host, whose one replica stayed connected, is
    confirmed alone and writes all along (failsafe decides per database)."""
    client = ThreadPoolExecutor(3, initializer=enter_netns, initargs=(fleet.lan.ns("client"),))
    made, uri, ledger, writer = ledger_on(fleet, "fs", client)
    request.addfinalizer(ledger.stop.set)  # a failure must not leave it writing forever
    primary = made.placement.host_id
    cut, kept = sorted(set(fleet.daemons) - {primary})
    made2, uri2, ledger2, writer2 = _beside(fleet, "fs2", primary, kept, client)
    request.addfinalizer(ledger2.stop.set)
    coordinator = fleet.coordinator.proc
    assert coordinator is not None
    cut_at = 0
    try:
        frozen, thawed = _outage_with_a_restart(fleet, primary, ledger, coordinator.pid)
        os.kill(coordinator.pid, signal.SIGSTOP)
        subprocess.run(["ip", "-n", fleet.lan.ns(cut), "link", "set", "eth0", "down"],
                       check=True)
        cut_at = lease.now_ns()
        _fenced_while_a_replica_is_cut(fleet, primary, (made, made2), (ledger, ledger2),
                                       cut_at)
    finally:
        if cut_at:
            subprocess.run(["ip", "-n", fleet.lan.ns(cut), "link", "set", "eth0", "up"],
                           check=False)
        os.kill(coordinator.pid, signal.SIGCONT)
    back = lease.now_ns()
    wait_for(lambda: ledger.first_after(back) is not None, 90,
             "writes again once the coordinator is back")
    ledger.stop.set()
    ledger2.stop.set()
    writer.result(60)
    writer2.result(60)
    lost2 = {seq for seq, _ in ledger2.acked} - _rows(uri2, client)
    assert not lost2, f"fs2: acknowledged commits lost: {sorted(lost2)}"
    # The fenced primary's lease had expired: once the coordinator is back, either
    # its host renews first and keeps it, or the replica that stayed connected is
    # promoted. Either way, synchronous commits are all there.
    after = _primary(fleet, "fs")
    lost = {seq for seq, _ in ledger.acked} - _rows(uri, client)
    assert not lost, f"acknowledged commits lost: {sorted(lost)}"
    print(f"failsafe: {_acked_between(ledger, frozen, thawed)} commits during the "
          f"{4 * TTL:.0f}s outage; with a replica cut off the primary fenced, and "
          f"{'it' if after == primary else f'the replica on {after}'} took writes again "
          f"{((ledger.first_after(back) or back) - back) / 1e9:.1f}s after the outage; "
          f"fs2 committed {_acked_between(ledger2, cut_at, cut_at + int(2 * TTL * 1e9))} "
          f"times while its neighbour was fenced, and runs on {_primary(fleet, 'fs2')}")
    _remove_everywhere(fleet, "fs", made.result.database.id)
    _remove_everywhere(fleet, "fs2", made2.result.database.id)


def _outage_with_a_restart(fleet: HostFleet, primary: str, ledger: Ledger,
                           coordinator_pid: int) -> tuple[int, int]:
    """The coordinator frozen for 4 TTLs, the primary's cygnetd restarted meanwhile:
    writes go on second by second, and nothing fails over once the coordinator is
    thawed. Returns when it was frozen and thawed (ns)."""
    wait_for(lambda: len(ledger.acked) > 50, 60, "commits before the outage")
    os.kill(coordinator_pid, signal.SIGSTOP)
    frozen = lease.now_ns()
    time.sleep(2 * TTL)
    # Writes went on through the outage, second by second.
    _every_second(ledger, frozen, 2 * int(TTL), "of the outage")
    again = _restart_during_outage(fleet.daemons[primary], ledger)
    time.sleep(2 * TTL)
    thawed = lease.now_ns()
    os.kill(coordinator_pid, signal.SIGCONT)
    _every_second(ledger, again, 2 * int(TTL), "after the restart")
    time.sleep(2 * TTL)  # what a failover of the thawed coordinator would need
    assert _primary(fleet, "fs") == primary
    assert _acked_between(ledger, thawed, lease.now_ns()) > 0
    log = fleet.daemons[primary].log_path.read_text()
    assert "failsafe: no coordinator renews this host's lease" in log
    return frozen, thawed


def _fenced_while_a_replica_is_cut(
        fleet: HostFleet, primary: str,
        made: tuple[cpb.FleetCreateDatabaseResponse, cpb.FleetCreateDatabaseResponse],
        ledgers: tuple[Ledger, Ledger], cut_at: int) -> None:
    """The coordinator frozen again and one replica's host cut off (at `cut_at`): no
    failsafe for fs, whose primary fences; fs2, confirmed by its replica, writes on."""
    ledger, ledger2 = ledgers
    # The last heartbeat's deadline (one in flight at the freeze has landed by
    # now; with fs unconfirmed no failsafe round renews it): fs fences at it. Once
    # fs is fenced, rounds confirm all that is left and renew the lease again.
    time.sleep(0.3)
    lease_file = fleet.daemons[primary].base / "run" / lease.LEASE_FILE
    deadline = lease.read_deadline(lease_file)
    time.sleep(2 * TTL)
    assert deadline < lease.now_ns()
    late = [s for s, t in ledger.acked if t > deadline + int(0.2e9)]
    assert not late, f"commits acknowledged after the fence deadline: {late}"
    fs_pgdata = _main_pgdata(fleet.daemons[primary], made[0].result.database.id)
    assert (fs_pgdata / lease.FENCED_MARKER).exists()
    _every_second(ledger2, cut_at, 2 * int(TTL), "of the cut (fs2)")
    said = fleet.daemons[primary].log_path.read_text()
    assert f"while {made[1].result.database.id} keep writing" in said


def _remove_everywhere(f: HostFleet, name: str, db_id: str) -> None:
    """The database, its replicas, and any old primary's copy: the next test's fleet
    holds nothing of it."""
    every_host_available(f)  # DeleteDatabase needs the hosts that hold it
    with f.coordinator.stub() as c:
        for r in c.ListReplicas(cpb.FleetListReplicasRequest(database=name),
                                timeout=60).replicas:
            c.DeleteReplica(cpb.FleetDeleteReplicaRequest(database=name, host_id=r.host_id),
                            timeout=120)
        c.DeleteDatabase(apb.DeleteDatabaseRequest(database=name), timeout=120)
    for d in f.daemons.values():
        with d.stub() as s:
            held = [x.id for x in s.ListDatabases(apb.ListDatabasesRequest(),
                                                  timeout=30).databases]
            if db_id in held:
                s.DeleteDatabase(apb.DeleteDatabaseRequest(database=db_id), timeout=120)


def test_host_loss_then_partition(fleet: HostFleet, request: pytest.FixtureRequest) -> None:
    client = ThreadPoolExecutor(4, initializer=enter_netns, initargs=(fleet.lan.ns("client"),))
    made, uri = replicated_database(fleet, "fo")
    first = made.placement.host_id
    client.submit(lambda: psycopg.connect(uri, autocommit=True).execute(
        "CREATE TABLE ledger (seq bigint PRIMARY KEY)")).result(60)
    # A branch lives on the primary's host only: it must not stop the old primary
    # from rejoining (part 3), and its data must stay.
    with fleet.coordinator.stub() as c:
        preview = c.CreateBranch(apb.CreateBranchRequest(database="fo", name="preview"),
                                 timeout=120).branch
    second, acked = _host_loss(fleet, uri, first, client, request)
    _partition_then_rejoin(fleet, made, uri, (first, second), acked, client, request)
    _back_without_wal_then_reseeded(fleet, made, uri, first, preview.id, client)


def _host_loss(fleet: HostFleet, uri: str, first: str, client: ThreadPoolExecutor,
               request: pytest.FixtureRequest) -> tuple[str, set[int]]:
    """1. The primary's host lost under a ledger client: a replica is promoted and no
    acknowledged commit is lost. Returns the new primary's host and the commits."""
    ledger = Ledger(lambda: psycopg.connect(uri, autocommit=True))
    request.addfinalizer(ledger.stop.set)  # a failure must not leave it writing forever
    writer = client.submit(ledger.run, 0)
    wait_for(lambda: len(ledger.acked) > 100, 60, "commits before the host loss")
    _kill_host(fleet.daemons[first], fleet.lan.ns(first))
    killed_at = lease.now_ns()  # once all is dead: a commit may be acked during the kill
    wait_for(lambda: ledger.first_after(killed_at) is not None, 90, "writes after failover")
    wait_for(lambda: len([1 for _, t in ledger.acked if t > killed_at]) > 20, 60,
             "more writes on the new primary")
    ledger.stop.set()
    writer.result(60)
    second = _primary(fleet, "fo")
    assert second != first
    lost = {s for s, _ in ledger.acked} - _rows(uri, client)
    assert not lost, f"acknowledged commits lost with synchronous replication: {sorted(lost)}"
    back = (ledger.first_after(killed_at) or killed_at) - killed_at
    print(f"host loss: writes again {back / 1e9:.2f}s after the kill, "
          f"{len(ledger.acked)} commits acknowledged, 0 lost")
    return second, {s for s, _ in ledger.acked}


def _partition_then_rejoin(fleet: HostFleet, made: cpb.FleetCreateDatabaseResponse, uri: str,
                           hosts: tuple[str, str], acked: set[int],
                           client: ThreadPoolExecutor, request: pytest.FixtureRequest
                           ) -> None:
    """2. The new primary partitioned, its cygnetd stopped too: no local commit is
    acknowledged after its fence, and the synchronous commits `acked` before all
    survive; once back it rejoins, rewound, as a replica."""
    first, second = hosts
    d2, ns2 = fleet.daemons[second], fleet.lan.ns(second)
    conn_info = _local_conn(d2, made.result.database.id, made.result.connection.password)
    inside = ThreadPoolExecutor(2, initializer=enter_netns, initargs=(ns2,))
    cut, cut_writer = _local_ledger(conn_info, inside, request)
    assert d2.proc is not None
    os.kill(d2.proc.pid, signal.SIGSTOP)
    subprocess.run(["ip", "-n", ns2, "link", "set", "eth0", "down"], check=True)
    try:
        deadline = lease.read_deadline(d2.base / "run" / lease.LEASE_FILE)
        assert deadline > 0
        wait_for(lambda: _primary(fleet, "fo") not in (first, second), 90,
                 "the last replica promoted")
        time.sleep(1)  # the partitioned client keeps trying meanwhile
        cut.stop.set()
        cut_writer.result(60)
        # A commit checked just before the fence deadline is acknowledged just after
        # it; the coordinator's expiry, and so any promotion, is a margin later still.
        expiry = deadline + int(TTL * lease.MARGIN_SHARE * 1e9)
        late = [s for s, t in cut.acked if t >= expiry]
        assert not late, f"commits acknowledged on the fenced primary after expiry: {late}"
        overrun = max(t for _, t in cut.acked) - deadline
        third = _primary(fleet, "fo")
        survivors = _rows(uri, client)
        assert acked <= survivors
        async_lost = {s for s, _ in cut.acked} - survivors
        print(f"partition: {len(cut.acked)} local commits on {second} before its fence, "
              f"{len(async_lost)} of them not on {third} (asynchronous); last local ack "
              f"{overrun / 1e6:+.0f} ms from the fence deadline; last synchronous commit "
              f"{max(acked)} kept")
    finally:
        subprocess.run(["ip", "-n", ns2, "link", "set", "eth0", "up"], check=False)
        os.kill(d2.proc.pid, signal.SIGCONT)
    # Back on the network: the old primary rejoins as a replica of the third,
    # rewound, so the local commits it took alone are gone from it (they stay in
    # its rejoin snapshot); it never takes a write again.
    wait_for(lambda: _replica_state(fleet, "fo", second) == "streaming", 180,
             "the old primary rejoined as a replica")
    assert _primary(fleet, "fo") == third
    assert "@rejoin-" in subprocess.run(
        ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", d2.pool.name],
        capture_output=True, text=True, check=True).stdout
    with pytest.raises(psycopg.Error, match="read-only"):
        inside.submit(lambda: psycopg.connect(conn_info, autocommit=True).execute(
            "INSERT INTO ledger VALUES (-1)")).result(60)
    wait_for(lambda: _rows(conn_info, inside) == _rows(uri, client), 60,
             "the rejoined replica holding the primary's ledger")
    assert not async_lost & _rows(conn_info, inside)
    print(f"rejoin: {second} follows {third}; its {len(async_lost)} local-only commits "
          "were rewound away")


def _local_ledger(conn_info: str, inside: ThreadPoolExecutor,
                  request: pytest.FixtureRequest) -> tuple[Ledger, Future[None]]:
    """A ledger writing from inside the primary's host with synchronous_commit = local
    (what an asynchronous database acknowledges), once it has committed."""
    cut = Ledger(lambda: psycopg.connect(conn_info, autocommit=True),
                 "SET synchronous_commit = local")
    request.addfinalizer(cut.stop.set)
    cut_writer = inside.submit(cut.run, 1_000_000)
    wait_for(lambda: len(cut.acked) > 20 or cut.errors > 50, 60,
             "local commits before the partition")
    assert len(cut.acked) > 20, cut.last_error
    return cut, cut_writer


def _back_without_wal_then_reseeded(fleet: HostFleet, made: cpb.FleetCreateDatabaseResponse,
                                    uri: str, first: str, preview_id: str,
                                    client: ThreadPoolExecutor) -> None:
    """3. The first host returns, its main's WAL gone, so no pg_rewind can work: it is
    seeded afresh, its old main and its branch kept as lost copies."""
    d1 = fleet.daemons[first]
    wal = _main_pgdata(d1, made.result.database.id) / "pg_wal"
    for segment in wal.iterdir():
        if segment.is_file() and len(segment.name) == 24:
            segment.unlink()
    subprocess.run(["ip", "-n", fleet.lan.ns(first), "link", "set", "eth0", "up"], check=True)
    back_at = time.monotonic()
    d1.start()
    wait_for(lambda: _replica_state(fleet, "fo", first) == "streaming", 180,
             "the old primary without its WAL seeded afresh as a replica")
    kinds = subprocess.run(["zfs", "get", "-H", "-r", "-s", "local", "-o", "name,value",
                            "cygnet:kind", d1.pool.name], capture_output=True, text=True,
                           check=True).stdout
    lost = [line.split("\t")[0] for line in kinds.splitlines() if line.endswith("\tlost-copy")]
    assert len(lost) == 2, kinds  # the stale main, and the branch set aside
    assert any(name.endswith(f"/{preview_id}") for name in lost), kinds
    said = d1.log_path.read_text()
    assert "pg_rewind from the new primary failed" in said
    assert "branch preview stays on this host as a lost copy" in said
    kept = subprocess.run(["zfs", "get", "-H", "-p", "-o", "value", "referenced",
                           next(n for n in lost if n.endswith(preview_id))],
                          capture_output=True, text=True, check=True).stdout
    assert int(kept) > 10 * 2**20, kept  # a whole cluster's files, not an empty dataset
    # The replica's string names no password: the database's own is the same.
    reader = psycopg.conninfo.make_conninfo(_replica_uri(fleet, "fo", first),
                                            password=made.result.connection.password)
    wait_for(lambda: _rows(reader, client) == _rows(uri, client), 60,
             "the reseeded replica holding the primary's ledger")
    third = _primary(fleet, "fo")
    print(f"reseed: {first} streams from {third} {time.monotonic() - back_at:.1f}s after "
          "its daemon started; its old data is kept as a lost copy")


def _replica_state(f: HostFleet, name: str, host_id: str) -> str:
    with f.coordinator.stub() as c:
        listed = c.ListReplicas(cpb.FleetListReplicasRequest(database=name), timeout=60)
    return next((r.state for r in listed.replicas if r.host_id == host_id), "")


def _replica_uri(f: HostFleet, name: str, host_id: str) -> str:
    """The read-only connection string of the database's replica on `host_id`."""
    with f.coordinator.stub() as c:
        listed = c.ListReplicas(cpb.FleetListReplicasRequest(database=name), timeout=60)
    return next(str(r.connection.uri) for r in listed.replicas if r.host_id == host_id)


def _main_pgdata(d: Daemon, db_id: str) -> Path:
    """The fenced main's data directory of database `db_id` (a template has no fence
    settings; another test's database may leave a copy behind while it goes)."""
    found = [p.parent for p in d.mount_root.glob(f"**/db/{db_id}/**/pgdata/cygnet.conf")
             if "cygnet_fence.deadline_file" in p.read_text()]
    assert len(found) == 1, found
    return found[0]


def _local_conn(d: Daemon, db_id: str, password: str) -> str:
    """main's own Postgres on its host, through its unix socket (no network needed)."""
    pgdata = _main_pgdata(d, db_id)
    port = next(line.split("=")[1].strip() for line in (pgdata / "cygnet.conf").read_text()
                .splitlines() if line.startswith("port ="))
    sock = next(line.split("=")[1].strip().strip("'").split(",")[0] for line in
                (pgdata / "cygnet.conf").read_text().splitlines()
                if line.startswith("unix_socket_directories"))
    return f"host={sock} port={port} user=postgres dbname=postgres password={password}"
