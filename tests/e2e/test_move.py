"""Moving a database between hosts, on three hosts in network namespaces.

A database with a branch (a ZFS clone of main's branch point) moves from its
host to another while a client writes a ledger through the database's
connection string (asking the coordinator again after an error): every
commit it saw acknowledged is on the new host, the checksum of every table of
both branches is the same after the move, the branch is still a clone there,
and nothing of the database is left on the old host. Bad moves are refused
with nothing changed: to its own host, to an unknown host, to a drained host,
to a host without the database's Postgres major or without room, and a
second move of a database already moving. Then `cygnet hosts drain
--evacuate` moves it off its new host. Timings are printed, not asserted
(benchmarks/bench_move.py measures the downtime).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import backup_pb2 as bpb
from cygnet.api.v1 import backup_pb2_grpc as bpb_grpc
from cygnet.api.v1 import coordinator_pb2 as cpb
from tests.e2e.fleet import HostFleet, host_fleet, wait_for
from tests.e2e.test_replicas import Client, Ledger, _refused, _with_password
from tests.harness import VENV_BIN

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet() -> Iterator[HostFleet]:
    with host_fleet(port_base=56600) as f:
        yield f


def _checksums(client: Client, uri: str, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """md5 of every user table's rows, in a stable order, by table name."""
    tables = [str(r[0]) for r in client.query(
        uri, "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
             "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")]
    out = {}
    for t in tables:
        if t.split(".")[-1] in skip:
            continue
        row = client.query(uri, f"SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY "
                                f"x::text), '')) FROM {t} x")  # names from pg_tables, quoted
        out[t] = str(row[0][0])
    return out


def _uri(c: object, database: str, branch: str = "") -> str:
    conn: apb.Connection = c.GetConnection(apb.GetConnectionRequest(  # type: ignore[attr-defined]
        branch=apb.BranchRef(database=database, name=branch)), timeout=60)
    return conn.uri


def _host_of(c: object, database: str) -> str:
    got: cpb.FleetDatabase = c.GetDatabase(  # type: ignore[attr-defined]
        apb.GetDatabaseRequest(database=database), timeout=60)
    return got.host_id


def _datasets_of(f: HostFleet, host: str, db_id: str) -> list[str]:
    return [n for n in f.daemons[host].pool.datasets() if f"/db/{db_id}" in n]


def _cli(f: HostFleet, *args: str) -> subprocess.CompletedProcess[str]:
    cert, key = f.pki.issue("client", "tester")
    return subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{f.lan.ns('client')}", str(VENV_BIN / "cygnet"),
         "--coordinator", f"{f.lan.nodes['coord']}:7434", "--ca", str(f.pki.ca), *args],
        capture_output=True, text=True, timeout=300,
        env={"CYGNET_CERT": str(cert), "CYGNET_KEY": str(key), "PATH": "/usr/bin:/bin"})


def _refusals(f: HostFleet, c: object, source: str, target: str) -> None:
    """Each refused with a clear error; the database stays where it is."""
    def move(to: str) -> None:
        for _ in c.MoveDatabase(cpb.MoveDatabaseRequest(  # type: ignore[attr-defined]
                database="mv", to_host=to), timeout=120):
            pass

    _refused(lambda: move(source), grpc.StatusCode.FAILED_PRECONDITION, "already")
    _refused(lambda: move("nowhere"), grpc.StatusCode.NOT_FOUND, "nowhere")
    c.DrainHost(cpb.DrainHostRequest(host_id=target), timeout=30)  # type: ignore[attr-defined]
    try:
        _refused(lambda: move(target), grpc.StatusCode.FAILED_PRECONDITION, "drained")
    finally:
        c.UndrainHost(cpb.DrainHostRequest(host_id=target),  # type: ignore[attr-defined]
                      timeout=30)
    # Hosts known only by their registration (no agent behind them: the coordinator
    # refuses before it calls one): one without PostgreSQL 15, one without room.
    for host, versions, free in (("h8", ["99"], 2**40), ("h9", ["15"], 1),
                                 ("h7", ["15"], 2**40)):
        with f.coordinator.stub(role="host", name=host) as h:
            cap = cpb.HostCapacity(pools=[apb.Pool(name="p", size_bytes=2**41,
                                                   free_bytes=free)],
                                   memory_bytes=2**35, postgres_versions=versions)
            h.RegisterHost(cpb.RegisterHostRequest(host_id=host, address="192.0.2.1:7433",
                                                   capacity=cap), timeout=30)
            h.Heartbeat(cpb.HeartbeatRequest(host_id=host, capacity=cap), timeout=30)
        # h7 would do, but its agent does not answer: the move fails, nothing changed.
        code, words = {"h8": (grpc.StatusCode.INVALID_ARGUMENT, "PostgreSQL 99, not 15"),
                       "h9": (grpc.StatusCode.RESOURCE_EXHAUSTED, "MiB free"),
                       "h7": (grpc.StatusCode.UNAVAILABLE, "h7")}[host]
        _refused(lambda host=host: move(host), code, words)
    assert _host_of(c, "mv") == source
    c.DrainHost(cpb.DrainHostRequest(host_id="h7"), timeout=30)  # type: ignore[attr-defined]


QUOTA = 768 * 2**20


def _backup_went_along(fleet: HostFleet, client: Client, source: str, target: str,
                       db_id: str, backup_id: str, password: str) -> None:
    """The backup made on the source is listed and restores on the target; the
    source's copy expires as a deleted database's does."""
    with fleet.daemons[target].channel() as ch:
        backups = bpb_grpc.BackupsStub(ch)  # type: ignore[no-untyped-call]
        listed = backups.ListBackups(bpb.ListBackupsRequest(database="mv"), timeout=60)
        assert backup_id in [b.id for b in listed.backups], listed
        for _ in backups.RestoreBackup(bpb.RestoreBackupRequest(
                backup_id=backup_id, branch_name="from-backup"), timeout=300):
            pass
    with fleet.coordinator.stub() as c:
        restored = _with_password(_uri(c, "mv", "from-backup"), password)
        assert f"@{fleet.lan.nodes[target]}:" in restored
        assert client.query(restored, "SELECT n FROM marks ORDER BY n") == [(1,), (2,)]
        c.DeleteBranch(apb.DeleteBranchRequest(branch=apb.BranchRef(
            database="mv", name="from-backup")), timeout=120)
    tombstones = fleet.daemons[source].base / "state" / "backups" / "deleted-databases.json"
    assert db_id in json.loads(tombstones.read_text())


@dataclass
class Moving:
    """The database "mv" with a branch "dev", what it held before the move, and where
    it goes."""

    db_id: str
    source: str
    target: str
    password: str
    uri: str
    dev_uri: str
    then: datetime.datetime | None = None  # a point before the move
    before_main: dict[str, str] = field(default_factory=dict)
    before_dev: dict[str, str] = field(default_factory=dict)
    backup_id: str = ""


def test_move_under_load(fleet: HostFleet, request: pytest.FixtureRequest) -> None:
    client = Client(fleet)
    with fleet.coordinator.stub() as c:
        mv = _made_with_a_branch(fleet, client, c)
        _refusals(fleet, c, mv.source, mv.target)
        _marked_and_backed_up(fleet, client, mv)
        on_new = _moved_under_a_ledger(fleet, client, c, mv, request)
        _everything_went_along(fleet, client, c, mv)
        _backup_went_along(fleet, client, mv.source, mv.target, mv.db_id, mv.backup_id,
                           mv.password)

        # Evacuating the new host moves it on (placement picks), and says so.
        done = _cli(fleet, "--json", "hosts", "drain", mv.target, "--evacuate")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert [m["database"] for m in report["moved"]] == ["mv"], report
        assert report["not_moved"] == []
        third = _host_of(c, "mv")
        assert third != mv.target
        c.UndrainHost(cpb.DrainHostRequest(host_id=mv.target), timeout=30)
        assert client.query(_with_password(_uri(c, "mv"), mv.password),
                            "SELECT count(*) FROM ledger")[0][0] == on_new
        assert _datasets_of(fleet, mv.target, mv.db_id) == []


def _made_with_a_branch(fleet: HostFleet, client: Client, c: Any) -> Moving:
    """The database with a quota, rows, and a branch that diverged from main."""
    made = c.CreateDatabase(cpb.FleetCreateDatabaseRequest(
        database=apb.CreateDatabaseRequest(name="mv", size_class="nano",
                                           quota_bytes=QUOTA)), timeout=300)
    source = made.placement.host_id
    password = made.result.connection.password
    uri = made.result.connection.uri
    client.query(uri, "CREATE TABLE ledger (seq int PRIMARY KEY)")
    client.query(uri, "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS body "
                      "FROM generate_series(1, 20000) g")
    c.CreateBranch(apb.CreateBranchRequest(database="mv", name="dev"), timeout=120)
    dev_uri = _with_password(_uri(c, "mv", "dev"), password)
    client.query(dev_uri, "CREATE TABLE only_dev AS SELECT generate_series(1, 500) AS n")
    client.query(dev_uri, "DELETE FROM items WHERE mod(id, 3) = 0")
    client.query(uri, "INSERT INTO items SELECT g, 'after' FROM generate_series(20001, "
                      "25000) g")
    # The coordinator passes the quota on to the host it places the database on.
    assert c.GetDatabase(apb.GetDatabaseRequest(database="mv"),
                         timeout=60).database.quota_bytes == QUOTA
    return Moving(made.result.database.id, source, sorted(set(fleet.daemons) - {source})[0],
                  password, uri, dev_uri)


def _marked_and_backed_up(fleet: HostFleet, client: Client, mv: Moving) -> None:
    """A point before the move, for a point-in-time branch after it; checksums; and a
    backup, which goes along and restores on the new host."""
    client.query(mv.uri, "CREATE TABLE marks (n int)")
    client.query(mv.uri, "INSERT INTO marks VALUES (1)")
    mv.then = client.query(mv.uri, "SELECT clock_timestamp()")[0][0]  # type: ignore[assignment]
    time.sleep(0.2)
    client.query(mv.uri, "INSERT INTO marks VALUES (2)")
    mv.before_main = _checksums(client, mv.uri, skip=("ledger",))
    mv.before_dev = _checksums(client, mv.dev_uri)
    with fleet.daemons[mv.source].channel() as ch:
        events = list(bpb_grpc.BackupsStub(ch).CreateBackup(  # type: ignore[no-untyped-call]
            bpb.CreateBackupRequest(branch=apb.BranchRef(database="mv")), timeout=300))
    mv.backup_id = events[-1].result.id


def _moved_under_a_ledger(fleet: HostFleet, client: Client, c: Any, mv: Moving,
                          request: pytest.FixtureRequest) -> int:
    """The move to `mv.target` while a ledger client writes; a second move meanwhile
    is refused. Not one acknowledged commit is lost. Returns the ledger's rows."""
    ledger = Ledger(fleet, client, "mv")
    request.addfinalizer(ledger.stop.set)  # a failure must not leave it writing forever
    writer = client.pool.submit(ledger.run)
    wait_for(lambda: len(ledger.acked) > 200, 60, "ledger commits before the move")
    phases: list[str] = []
    second: list[grpc.StatusCode] = []
    started = time.monotonic()
    stream = c.MoveDatabase(cpb.MoveDatabaseRequest(database="mv", to_host=mv.target),
                            timeout=600)
    downtime = 0.0
    for p in stream:
        if not phases:
            # A second move of a database already moving: refused.
            try:
                for _ in c.MoveDatabase(cpb.MoveDatabaseRequest(
                        database="mv", to_host=mv.target), timeout=60):
                    pass
            except grpc.RpcError as exc:
                second.append(exc.code())
                assert "being moved" in (exc.details() or ""), exc.details()
        phases.append(p.phase)
        if p.HasField("downtime"):
            downtime = p.downtime.ToNanoseconds() / 1e9
    took = time.monotonic() - started
    before = len(ledger.acked)
    wait_for(lambda: len(ledger.acked) > before + 200, 60, "commits on the new host")
    ledger.stop.set()
    writer.result(60)

    assert second == [grpc.StatusCode.FAILED_PRECONDITION]
    assert phases[0] == "prepare" and phases[-1] == "moved", phases
    assert {"full", "final", "started", "switch", "cleanup", "archive"} <= set(phases), phases
    assert _host_of(c, "mv") == mv.target
    new_uri = _uri(c, "mv")
    assert f"@{fleet.lan.nodes[mv.target]}:" in new_uri
    on_new = {r[0] for r in client.query(_with_password(new_uri, mv.password),
                                         "SELECT seq FROM ledger")}
    lost = sorted(set(ledger.acked) - on_new)
    print(f"move: {took:.2f}s in all, {downtime:.3f}s down on the agent, client gap "
          f"{ledger.gap:.3f}s, {len(ledger.acked)} commits acknowledged, {len(lost)} lost")
    assert lost == []
    return len(on_new)


def _everything_went_along(fleet: HostFleet, client: Client, c: Any, mv: Moving) -> None:
    """Main's and dev's rows, dev's parentage, the quota and the archived WAL are on
    the target; nothing of the database is left on the source."""
    new_uri = _with_password(_uri(c, "mv"), mv.password)
    assert _checksums(client, new_uri, skip=("ledger",)) == mv.before_main
    new_dev = _with_password(_uri(c, "mv", "dev"), mv.password)
    assert f"@{fleet.lan.nodes[mv.target]}:" in new_dev
    assert _checksums(client, new_dev) == mv.before_dev
    dev = c.GetBranch(apb.GetBranchRequest(branch=apb.BranchRef(database="mv", name="dev")),
                      timeout=60)
    assert dev.parent_branch_name == "main" and dev.origin_snapshot, dev
    assert _datasets_of(fleet, mv.source, mv.db_id) == []
    assert _datasets_of(fleet, mv.target, mv.db_id)
    # The quota went along (a stream carries no native property).
    assert c.GetDatabase(apb.GetDatabaseRequest(database="mv"),
                         timeout=60).database.quota_bytes == QUOTA
    # So did the archived WAL: a point before the move is reached on the new host.
    at = Timestamp()
    at.FromDatetime(mv.then)  # type: ignore[arg-type]
    c.CreateBranch(apb.CreateBranchRequest(database="mv", name="then", at_time=at),
                   timeout=300)
    then_uri = _with_password(_uri(c, "mv", "then"), mv.password)
    assert f"@{fleet.lan.nodes[mv.target]}:" in then_uri
    assert client.query(then_uri, "SELECT n FROM marks") == [(1,)]
    c.DeleteBranch(apb.DeleteBranchRequest(branch=apb.BranchRef(database="mv",
                                                                name="then")), timeout=120)


def test_a_move_that_fails_after_the_stop_leaves_it_on_the_source(
        fleet: HostFleet, request: pytest.FixtureRequest) -> None:
    """The target fails after the final round (CYGNET_TEST_MOVE_FAIL_AT=final): the
    database runs on its host again, no acknowledged commit lost, nothing left there."""
    client = Client(fleet)
    with fleet.coordinator.stub() as c:
        made = c.CreateDatabase(cpb.FleetCreateDatabaseRequest(
            database=apb.CreateDatabaseRequest(name="mvfail", size_class="nano")), timeout=300)
        db_id, source = made.result.database.id, made.placement.host_id
        client.query(made.result.connection.uri, "CREATE TABLE ledger (seq int PRIMARY KEY)")
        bad = sorted(set(fleet.daemons) - {source})[-1]
        daemon = fleet.daemons[bad]
        daemon.stop()
        os.environ["CYGNET_TEST_MOVE_FAIL_AT"] = "final"
        try:
            daemon.start()
        finally:
            del os.environ["CYGNET_TEST_MOVE_FAIL_AT"]
        try:
            wait_for(lambda: fleet.hosts()[bad].state == cpb.HOST_STATE_AVAILABLE, 30,
                     f"{bad} available again")
            ledger = Ledger(fleet, client, "mvfail")
            request.addfinalizer(ledger.stop.set)
            writer = client.pool.submit(ledger.run)
            wait_for(lambda: len(ledger.acked) > 100, 60, "ledger commits before the move")

            def move() -> None:
                for _ in c.MoveDatabase(cpb.MoveDatabaseRequest(database="mvfail",
                                                                to_host=bad), timeout=300):
                    pass

            _refused(move, grpc.StatusCode.ABORTED, "final round")
            before = len(ledger.acked)
            wait_for(lambda: len(ledger.acked) > before + 100, 60, "commits on the source again")
            ledger.stop.set()
            writer.result(60)
            assert _host_of(c, "mvfail") == source
            uri = _with_password(_uri(c, "mvfail"), made.result.connection.password)
            assert f"@{fleet.lan.nodes[source]}:" in uri
            rows = {r[0] for r in client.query(uri, "SELECT seq FROM ledger")}
            assert sorted(set(ledger.acked) - rows) == []
            assert _datasets_of(fleet, bad, db_id) == []
            snaps = [n for n in _datasets_of(fleet, source, db_id) if "@mv" in n]
            assert snaps == []  # the rounds' snapshots are gone
        finally:
            daemon.stop()
            daemon.start()


@pytest.mark.parametrize("point", ["started", "switched"])
def test_a_coordinator_dying_mid_move_is_finished_by_the_next(fleet: HostFleet,
                                                              point: str) -> None:
    """The coordinator exits (os._exit) just before ("started") or just after
    ("switched") its catalog switch. Started again, it finishes the move from its
    catalog: the database runs on the host the catalog names, with every
    acknowledged commit, and the other host holds nothing of it."""
    client = Client(fleet)
    coordinator, name = fleet.coordinator, f"mvcrash{point[:2]}"
    with coordinator.stub() as c:
        made = c.CreateDatabase(cpb.FleetCreateDatabaseRequest(
            database=apb.CreateDatabaseRequest(name=name, size_class="nano")), timeout=300)
    db_id, source = made.result.database.id, made.placement.host_id
    target = sorted(set(fleet.daemons) - {source})[0]
    client.query(made.result.connection.uri, "CREATE TABLE ledger (seq int PRIMARY KEY)")
    ledger = Ledger(fleet, client, name)
    writer = client.pool.submit(ledger.run)
    saved = list(coordinator.extra_args)
    try:
        wait_for(lambda: len(ledger.acked) > 50, 60, "ledger commits before the move")
        coordinator.stop()
        coordinator.extra_args = [*saved, "--move-orphaned-after", "5"]
        os.environ["CYGNET_TEST_COORDINATOR_EXIT_AT"] = point
        try:
            coordinator.start()
        finally:
            del os.environ["CYGNET_TEST_COORDINATOR_EXIT_AT"]
        wait_for(fleet.all_available, 60, "hosts back")
        with coordinator.stub() as c, pytest.raises(grpc.RpcError):
            for _ in c.MoveDatabase(cpb.MoveDatabaseRequest(database=name, to_host=target),
                                    timeout=300):
                pass
        assert coordinator.proc is not None and coordinator.proc.wait(30) == 70
        coordinator.start()  # without the exit: it finds the move unfinished
        expected = target if point == "switched" else source
        other = source if expected == target else target
        with coordinator.stub() as c:
            wait_for(lambda: _host_of(c, name) == expected, 60, f"{name} on {expected}")
        wait_for(lambda: _datasets_of(fleet, other, db_id) == [], 90,
                 f"nothing of {name} left on {other}")
        before = len(ledger.acked)
        wait_for(lambda: len(ledger.acked) > before + 50, 90, f"commits on {expected}")
        ledger.stop.set()
        writer.result(60)
        with coordinator.stub() as c:
            uri = _with_password(_uri(c, name), made.result.connection.password)
            assert f"@{fleet.lan.nodes[expected]}:" in uri
            rows = {r[0] for r in client.query(uri, "SELECT seq FROM ledger")}
            assert sorted(set(ledger.acked) - rows) == []
            assert [n for n in _datasets_of(fleet, expected, db_id) if "@mv" in n] == []
            c.DeleteDatabase(apb.DeleteDatabaseRequest(database=name), timeout=120)
    finally:
        ledger.stop.set()
        coordinator.stop()  # the next tests get the fixture's coordinator back
        coordinator.extra_args = saved
        coordinator.start()
        wait_for(fleet.all_available, 60, "hosts back")
