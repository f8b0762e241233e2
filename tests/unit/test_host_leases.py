"""Host leases and failover decisions in a real (SQLite) coordinator store."""

from __future__ import annotations

from pathlib import Path

import pytest

from cygnet.agent import lease
from cygnet.api.v1 import agent_pb2 as apb
from cygnet.coordinator.failover import most_advanced
from cygnet.coordinator.leases import HostLeases
from cygnet.coordinator.models import CatalogEntry, Registration
from cygnet.coordinator.replica_hosts import ReplicaHosts
from cygnet.coordinator.store import open_store
from cygnet.coordinator.store.sql import SqlStore

TTL = 6.0


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    for hid in ("a", "b", "c"):
        s.register(Registration(host_id=hid, address=f"{hid}:1"), 0, 10, 1000.0)
    s.replace_host_catalog("a", [CatalogEntry(id="db1", name="shop", host_id="a",
                                              size_class="small", postgres_version="15")], {})
    return s


def test_take_over_only_after_the_lease_expired(store: SqlStore) -> None:
    leases = HostLeases(store, TTL)
    entry = store.get_entry("db1")
    assert entry is not None
    assert not leases.take_over(entry, "b", 0, now=1000.0 + TTL - 0.1)
    assert store.get_entry("db1").host_id == "a"  # type: ignore[union-attr]
    assert leases.still_primary("a", ["db1"]) == ["db1"]
    assert leases.take_over(entry, "b", 0, now=1000.0 + TTL)
    assert store.get_entry("db1").host_id == "b"  # type: ignore[union-attr]
    # The old host comes back: it is told nothing is its own, even if its report
    # put the database back in its catalog.
    assert leases.still_primary("a", ["db1"]) == []
    store.replace_host_catalog("a", [CatalogEntry(id="db1", name="shop", host_id="a",
                                                  size_class="small", postgres_version="15")], {})
    assert leases.still_primary("a", ["db1"]) == []
    [rec] = leases.pending()
    assert (rec.from_host, rec.to_host) == ("a", "b")
    leases.mark_promoted("db1")
    assert leases.pending() == []
    # A second takeover of the same entry (stale copy) changes nothing.
    assert not leases.take_over(entry, "c", 0, now=2000.0)


def test_heartbeat_renews_the_lease(store: SqlStore) -> None:
    leases = HostLeases(store, TTL)
    store.heartbeats([("a", store.heartbeat_values(
        Registration("a", "a:1").capacity, 0, 1005.0))])
    entry = store.get_entry("db1")
    assert entry is not None
    assert not leases.take_over(entry, "b", 0, now=1000.0 + TTL)
    assert leases.take_over(entry, "b", 0, now=1005.0 + TTL)


def test_most_advanced_running_replica_on_a_live_host(store: SqlStore) -> None:
    leases = HostLeases(store, TTL)
    hosts = {h.id: h for h in store.list_hosts()}
    found = [(hosts["b"], apb.Replica(state="waiting", replay_lsn="0/5000000")),
             (hosts["c"], apb.Replica(state="streaming", replay_lsn="0/4000000"))]
    chosen = most_advanced(found, leases, now=1001.0)
    assert chosen is not None and chosen[0].id == "b"
    # Stopped replicas and hosts whose own lease is gone are never chosen.
    found[0] = (hosts["b"], apb.Replica(state="stopped", replay_lsn="0/9000000"))
    assert most_advanced(found, leases, now=1001.0)[0].id == "c"  # type: ignore[index]
    assert most_advanced(found, leases, now=1000.0 + TTL) is None


def test_lease_file_deadline_and_renewal(tmp_path: Path) -> None:
    path = tmp_path / "lease"
    assert lease.read_deadline(path) == 0  # absent: expired
    sent = lease.now_ns()
    assert lease.deadline_for(sent, 6.0) == sent + 4 * 10**9
    hl = lease.HostLease.__new__(lease.HostLease)
    hl.path, hl.ttl = path, 0.0
    hl.renewed(sent, 6.0)
    assert lease.read_deadline(path) == sent + 4 * 10**9
    hl.renewed(sent - 10**9, 6.0)  # a late answer never moves the deadline back
    assert lease.read_deadline(path) == sent + 4 * 10**9
    assert hl.interval(5.0) == 2.0 and hl.call_timeout(10.0) == 1.0
    path.write_text(f"another-boot {sent + 10**12}\n")
    assert lease.read_deadline(path) == 0


def test_replica_hosts_say_whom_to_ask_and_what_can_fail_over(store: SqlStore) -> None:
    hosts = ReplicaHosts(store)
    assert hosts.of("db1") == set() and hosts.replicated_databases() == set()
    hosts.add("db1", "b")
    hosts.add("db1", "c")
    hosts.add("db1", "c")  # the same replica recorded again: still one row
    assert hosts.of("db1") == {"b", "c"}
    assert hosts.replicated_databases() == {"db1"}
    hosts.remove("db1", "b")  # promoted, or removed
    assert hosts.of("db1") == {"c"}
    assert ReplicaHosts(store).of("db1") == {"c"}  # kept in the store


def test_each_failover_remembers_the_copy_it_made_stale(store: SqlStore) -> None:
    """a -> b -> c: the copies on a and b both stay lost until each rejoins, so a host
    coming back after a second failover can neither lift its fence nor be failed over."""
    leases = HostLeases(store, TTL)
    entry = store.get_entry("db1")
    assert entry is not None and leases.take_over(entry, "b", 0, now=1000.0 + TTL)
    leases.mark_promoted("db1")
    store.heartbeats([("c", store.heartbeat_values(
        Registration("c", "c:1").capacity, 0, 1010.0))])
    entry = store.get_entry("db1")
    assert entry is not None and leases.take_over(entry, "c", 0, now=1000.0 + TTL)
    assert [(r.from_host, r.to_host) for r in leases.failovers()] == [("b", "c")]
    assert sorted(leases.lost_copies()) == [("db1", "a"), ("db1", "b")]
    assert leases.lost_on("a") == {"db1"} and leases.lost_on("c") == set()
    assert leases.still_primary("a", ["db1"]) == [] == leases.still_primary("b", ["db1"])
    leases.forget_copy("db1", "a")  # a rejoined as a replica
    assert leases.lost_copies() == [("db1", "b")]
    assert HostLeases(store, TTL).lost_copies() == [("db1", "b")]  # kept in the store


def test_a_store_from_before_lost_copies_keeps_its_failovers_guarded(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'old.db'}")
    with s.transaction() as tx:
        tx.x("CREATE TABLE failovers (database_id TEXT PRIMARY KEY, from_host TEXT NOT NULL, "
             "to_host TEXT NOT NULL, at REAL NOT NULL, promoted INTEGER NOT NULL DEFAULT 0)")
        tx.x("INSERT INTO failovers VALUES ('db9', 'x', 'y', 5.0, 1)")
    assert HostLeases(s, TTL).lost_copies() == [("db9", "x")]
    assert HostLeases(s, TTL).lost_copies() == [("db9", "x")]  # idempotent
