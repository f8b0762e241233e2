"""Replicas and the planned switchover on three hosts in network namespaces.

A database on one host gets two replicas on the others (one chosen by
placement, one named, synchronous: ANY 1 of the two), each seeded by a full
zfs send pulled from the primary's agent over mutual TLS. Rows written on the
primary show on both read-only replicas; the lag shows in GetBranch and
ListReplicas; refusals change nothing. Then a planned switchover runs while a
client writes a ledger through the database's current connection: every
commit the client saw acknowledged is on the new primary (0 lost), the old
primary streams from the new one, and a removed replica's slot is gone.
Timings are printed, not asserted (benchmarks/bench_seed.py measures).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import pytest

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as cpb
from tests.e2e.fleet import HostFleet, endpoint_uri, enter_netns, host_fleet, wait_for
from tests.harness import VENV_BIN

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet() -> Iterator[HostFleet]:
    with host_fleet(port_base=59400) as f:
        yield f


class Client:
    """SQL from the client's namespace (threads that entered it)."""

    def __init__(self, f: HostFleet) -> None:
        self.pool = ThreadPoolExecutor(4, initializer=enter_netns,
                                       initargs=(f.lan.ns("client"),))

    def query(self, uri: str, sql: str, params: tuple[object, ...] = ()
              ) -> list[tuple[object, ...]]:
        def run() -> list[tuple[object, ...]]:
            with psycopg.connect(uri, autocommit=True, connect_timeout=5) as c:
                cur = c.execute(sql, params)
                return cur.fetchall() if cur.description else []

        return self.pool.submit(run).result(60)


def _refused(call: object, code: grpc.StatusCode, words: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call()  # type: ignore[operator]
    assert err.value.code() == code, err.value.details()
    assert words in (err.value.details() or ""), err.value.details()


def _cli(f: HostFleet, *args: str) -> str:
    """The cygnet CLI from the client's namespace, with a client certificate."""
    cert, key = f.pki.issue("client", "tester")
    done = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{f.lan.ns('client')}", str(VENV_BIN / "cygnet"),
         "--coordinator", f"{f.lan.nodes['coord']}:7434", "--ca", str(f.pki.ca), *args],
        capture_output=True, text=True, timeout=120,
        env={"CYGNET_CERT": str(cert), "CYGNET_KEY": str(key), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def _with_password(uri: str, password: str) -> str:
    return uri.replace("postgres@", f"postgres:{password}@", 1)


class Ledger:
    """Writes numbered rows one commit at a time; keeps the numbers acknowledged.
    On an error it asks the coordinator for the database's connection again."""

    def __init__(self, f: HostFleet, client: Client, name: str) -> None:
        self.f, self.client, self.name = f, client, name
        self.acked: list[int] = []
        self.stop = threading.Event()
        self.gap = 0.0  # longest time between two acknowledged commits

    def uri(self) -> str:
        with self.f.coordinator.stub() as c:
            conn: apb.Connection = c.GetConnection(apb.GetConnectionRequest(
                branch=apb.BranchRef(database=self.name)), timeout=60)
            return conn.uri

    def run(self) -> None:
        seq, uri, last = 0, "", time.monotonic()
        while not self.stop.is_set():
            try:
                uri = uri or self.uri()
                with psycopg.connect(uri, autocommit=True, connect_timeout=3) as c:
                    while not self.stop.is_set():
                        c.execute("INSERT INTO ledger VALUES (%s)", (seq + 1,))
                        seq += 1
                        self.acked.append(seq)
                        now = time.monotonic()
                        self.gap, last = max(self.gap, now - last), now
            except (psycopg.Error, grpc.RpcError):
                seq += 1  # that number may or may not have committed: never reused
                time.sleep(0.05)
                uri = ""  # asked for again: the primary may have moved


@dataclass
class Replicated:
    """A database with two replicas: `placed` by placement, `sync` named and synchronous."""

    db_id: str
    primary: str
    others: list[str]
    password: str
    uri: str
    placed: apb.Replica
    sync: apb.Replica

    def at(self, uri: str) -> str:
        return _with_password(uri, self.password)


def test_replicas_and_switchover(fleet: HostFleet, request: pytest.FixtureRequest) -> None:
    client = Client(fleet)
    with fleet.coordinator.stub() as c:
        ha = _made_with_two_replicas(fleet, client, c)
        _replicas_stream_read_only(fleet, client, ha)
        _quorum_commits_with_one_replica_frozen(client, ha)
        _lag_shows_and_guards_promotion(client, c, ha)
        new_uri = _switchover_loses_no_commit(fleet, client, c, ha, request)
        _replicas_follow_and_leave_nothing(fleet, client, c, ha, new_uri)


def _made_with_two_replicas(fleet: HostFleet, client: Client, c: Any) -> Replicated:
    made = c.CreateDatabase(cpb.FleetCreateDatabaseRequest(
        database=apb.CreateDatabaseRequest(name="ha", size_class="nano")), timeout=300)
    primary = made.placement.host_id
    others = sorted(set(fleet.daemons) - {primary})
    uri = made.result.connection.uri
    client.query(uri, "CREATE TABLE ledger (seq int PRIMARY KEY)")
    client.query(uri, "INSERT INTO ledger SELECT generate_series(-100, -1)")

    # A replica on the primary's own host: refused, nothing made.
    _refused(lambda: c.CreateReplica(cpb.FleetCreateReplicaRequest(
        database="ha", host_id=primary), timeout=60),
        grpc.StatusCode.FAILED_PRECONDITION, "own host")
    assert not c.ListReplicas(cpb.FleetListReplicasRequest(database="ha"),
                              timeout=60).replicas

    t0 = time.monotonic()
    placed = c.CreateReplica(cpb.FleetCreateReplicaRequest(database="ha"), timeout=300)
    seeded = time.monotonic() - t0
    assert placed.host_id in others and placed.primary_host_id == primary
    assert placed.seed_bytes > 0
    second = next(h for h in others if h != placed.host_id)
    sync = c.CreateReplica(cpb.FleetCreateReplicaRequest(
        database="ha", host_id=second, synchronous=True), timeout=300)
    assert sync.host_id == second and sync.synchronous
    print(f"seeded {placed.seed_bytes} bytes in {placed.seed_seconds:.2f}s "
          f"(whole call {seeded:.2f}s)")
    return Replicated(made.result.database.id, primary, others,
                      made.result.connection.password, uri, placed, sync)


def _replicas_stream_read_only(fleet: HostFleet, client: Client, ha: Replicated) -> None:
    """New rows show on both replicas, which are read-only."""
    client.query(ha.uri, "INSERT INTO ledger VALUES (0)")
    for rep in (ha.placed, ha.sync):
        ro = ha.at(rep.connection.uri)
        assert "target_session_attrs=read-only" in ro
        wait_for(lambda ro=ro: client.query(ro, "SELECT count(*) FROM ledger")[0][0] == 101,
                 60, f"row 0 on the replica of {rep.host_id}")
        with pytest.raises(psycopg.Error, match="read-only"):
            client.query(ro, "INSERT INTO ledger VALUES (1000000)")

    # A replica's host does not serve the database's endpoint, and says why.
    at_replica = endpoint_uri(fleet, ha.uri, "ha", [ha.placed.host_id])
    with pytest.raises(psycopg.Error, match="holds a replica of database 'ha', not its "
                                            "primary"):
        client.query(at_replica, "SELECT 1")


def _quorum_commits_with_one_replica_frozen(client: Client, ha: Replicated) -> None:
    """Synchronous with a quorum (ANY 1 of both): with one replica's walreceiver
    frozen, a commit still returns, confirmed by the other one."""
    # Both slots count: the second replica's joined once it streamed (it was left
    # out while seeded, so the seed stopped no commit).
    names = str(client.query(ha.uri, "SHOW synchronous_standby_names")[0][0])
    assert names.startswith("ANY 1 (") and all(
        f'"cygnet_replica_{h}"' in names for h in ha.others), names
    frozen = client.query(ha.at(ha.placed.connection.uri),
                          "SELECT pid FROM pg_stat_wal_receiver")[0][0]
    os.kill(int(str(frozen)), signal.SIGSTOP)
    try:
        client.query(ha.uri, "INSERT INTO ledger VALUES (999999)")
    finally:
        os.kill(int(str(frozen)), signal.SIGCONT)
    client.query(ha.uri, "DELETE FROM ledger WHERE seq = 999999")


def _lag_shows_and_guards_promotion(client: Client, c: Any, ha: Replicated) -> None:
    """Lag, as the primary sees it (GetBranch) and as each replica does; a lagging
    replica is not promoted without force."""
    main = c.GetBranch(apb.GetBranchRequest(branch=apb.BranchRef(database="ha")),
                       timeout=60)
    assert sorted(r.host_id for r in main.replicas) == ha.others
    assert all(r.state == "streaming" for r in main.replicas), main.replicas
    assert {r.sync_state for r in main.replicas} == {"quorum"}, main.replicas
    listed = c.ListReplicas(cpb.FleetListReplicasRequest(database="ha"), timeout=60)
    assert sorted(r.host_id for r in listed.replicas) == ha.others
    assert all(r.state == "streaming" and r.replay_lsn for r in listed.replicas)

    # Replay paused, WAL written: the replica lags.
    ro = ha.at(ha.sync.connection.uri)
    client.query(ro, "SELECT pg_wal_replay_pause()")
    client.query(ha.uri, "INSERT INTO ledger SELECT generate_series(1000001, 1002000)")
    wait_for(lambda: next(r.lag_bytes for r in c.ListReplicas(
        cpb.FleetListReplicasRequest(database="ha"), timeout=60).replicas
        if r.host_id == ha.sync.host_id) > 1000, 60, "replay lag")
    _refused(lambda: c.PromoteReplica(cpb.FleetPromoteReplicaRequest(
        database="ha", host_id=ha.sync.host_id, max_lag_bytes=1000), timeout=60),
        grpc.StatusCode.FAILED_PRECONDITION, "lags")
    assert client.query(ha.uri, "SELECT pg_is_in_recovery()") == [(False,)]
    client.query(ro, "SELECT pg_wal_replay_resume()")
    client.query(ha.uri, "DELETE FROM ledger WHERE seq > 1000000")


def _switchover_loses_no_commit(fleet: HostFleet, client: Client, c: Any, ha: Replicated,
                                request: pytest.FixtureRequest) -> str:
    """The switchover to the synchronous replica, under a ledger client; the new
    primary's connection string."""
    second = ha.sync.host_id
    ledger = Ledger(fleet, client, "ha")
    request.addfinalizer(ledger.stop.set)  # a failure must not leave it writing forever
    writer = client.pool.submit(ledger.run)
    wait_for(lambda: len(ledger.acked) > 200, 60, "ledger commits before the switchover")
    result = c.PromoteReplica(cpb.FleetPromoteReplicaRequest(
        database="ha", host_id=second), timeout=300)
    before = len(ledger.acked)
    wait_for(lambda: len(ledger.acked) > before + 200, 60, "commits on the new primary")
    ledger.stop.set()
    writer.result(60)
    assert result.new_primary.host_id == second and result.old_primary_host_id == ha.primary
    assert result.old_primary.primary_host_id == second, result.old_primary_message
    new_uri = ledger.uri()
    assert f"@{fleet.lan.nodes[second]}:" in new_uri
    on_new = {r[0] for r in client.query(ha.at(new_uri),
                                         "SELECT seq FROM ledger WHERE seq > 0")}
    lost = sorted(set(ledger.acked) - on_new)
    downtime = result.downtime.ToNanoseconds() / 1e9
    print(f"switchover: {len(ledger.acked)} commits acknowledged, {len(lost)} lost, "
          f"primary stopped for {downtime:.3f}s, client gap {ledger.gap:.3f}s")
    assert lost == []
    # The promoted main archives its WAL without a restart (set while a standby).
    assert client.query(ha.at(new_uri), "SHOW archive_mode") == [("on",)]
    return new_uri


def _replicas_follow_and_leave_nothing(fleet: HostFleet, client: Client, c: Any,
                                       ha: Replicated, new_uri: str) -> None:
    """The old primary streams from the new one and the third replica follows too;
    a removed replica's slot and a deleted database leave nothing behind."""
    second, placed = ha.sync.host_id, ha.placed.host_id

    def following() -> bool:
        reps = c.ListReplicas(cpb.FleetListReplicasRequest(database="ha"),
                              timeout=60).replicas
        return sorted((r.host_id, r.primary_host_id, r.state) for r in reps) == sorted(
            (h, second, "streaming") for h in (ha.primary, placed))

    wait_for(following, 60, "both replicas streaming from the new primary")

    listed_by_cli = json.loads(_cli(fleet, "--json", "replica", "list", "ha"))
    assert sorted(r["host"] for r in listed_by_cli) == sorted([ha.primary, placed])

    # Removing a replica drops its slot on the primary.
    c.DeleteReplica(cpb.FleetDeleteReplicaRequest(database="ha", host_id=placed),
                    timeout=120)
    slots = client.query(ha.at(new_uri),
                         "SELECT slot_name FROM pg_replication_slots ORDER BY 1")
    assert [s[0] for s in slots] == [f"cygnet_replica_{ha.primary}"], slots

    # Deleting the database removes its replica too: nothing of it is left anywhere.
    c.DeleteDatabase(apb.DeleteDatabaseRequest(database="ha"), timeout=300)
    for name, d in fleet.daemons.items():
        held = subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", d.pool.name],
                              capture_output=True, text=True, check=True).stdout
        assert ha.db_id not in held, (name, held)
