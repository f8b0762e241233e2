"""The coordinator's two stores, SQLite and PostgreSQL, pass the same tests."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cygnet.coordinator.models import (
    MB,
    Capacity,
    CatalogEntry,
    Constraints,
    Demand,
    PlaceRequest,
    PoolInfo,
    Registration,
)
from cygnet.coordinator.move_journal import MoveJournal
from cygnet.coordinator.store import reserve
from cygnet.coordinator.store.postgres import PostgresStore
from cygnet.coordinator.store.sql import SqlStore, entry_values
from cygnet.coordinator.store.sqlite import SqliteStore
from cygnet.errors import AlreadyExists, NotFound, ResourceExhausted
from tests.integration import coordinator_helpers, pg_helpers
from tests.integration.coordinator_helpers import PgServer

pytestmark = pytest.mark.integration
pg_template = pg_helpers.pg_template
pg_server = coordinator_helpers.pg_server

GB = 1024 * MB
NANO = Demand.for_size("nano")
Factory = Callable[[], SqlStore]


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Opens stores on one shared database (a file, or a fresh PostgreSQL database)."""
    opened: list[SqlStore] = []
    if request.param == "sqlite":
        path = tmp_path / "coordinator.db"

        def factory() -> SqlStore:
            opened.append(SqliteStore(path))
            return opened[-1]
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        dsn = server.new_database()

        def factory() -> SqlStore:
            opened.append(PostgresStore(dsn, pool_size=3))
            return opened[-1]
    yield factory
    for store in opened:
        store.close()


def reg(host_id: str, memory_gb: float = 4, zone: str = "z1", free_gb: float = 95,
        labels: dict[str, str] | None = None, versions: tuple[str, ...] = ("15",)
        ) -> Registration:
    pool = PoolInfo("tank", 100 * GB, int(free_gb * GB))
    cap = Capacity((pool,), int(memory_gb * GB), 0, versions, 0)
    return Registration(host_id, f"{host_id}:7433", zone, labels or {}, cap, 100, "0.1.0")


def register(store: SqlStore, r: Registration, now: float | None = None) -> None:
    store.register(r, r.capacity.memory_bytes, 100, time.time() if now is None else now)


def reservation(name: str | None = None, group: str = "") -> CatalogEntry:
    return CatalogEntry("r-" + secrets.token_hex(6), name, "", "nano", "15",
                        memory_bytes=NANO.memory_bytes, disk_bytes=NANO.disk_bytes, group=group,
                        state="reserved", expires_at=time.time() + 300, created_at=time.time())


def place(store: SqlStore, c: Constraints | None = None, name: str | None = None,
          group: str = "", dry: bool = False, version: str = "15") -> str:
    res = None if dry else reservation(name, group)
    return store.place(PlaceRequest(NANO, version, c or Constraints(), res)).host_id


def test_register_heartbeat_and_stale(make_store: Factory) -> None:
    store = make_store()
    register(store, reg("h1", labels={"disk": "nvme"}), now=100.0)
    h = store.get_host("h1")
    assert h is not None and h.available and h.labels == {"disk": "nvme"}
    assert h.capacity.postgres_versions == ("15",) and h.capacity.pools[0].name == "tank"
    assert not store.heartbeat("nope", Capacity(), 0, 101.0)
    assert store.mark_stale(cutoff=150.0) == ["h1"]
    assert not store.get_host("h1").available  # type: ignore[union-attr]
    assert store.mark_stale(cutoff=150.0) == []
    assert store.heartbeat("h1", reg("h1").capacity, 4 * GB, 200.0)
    assert store.get_host("h1").available  # type: ignore[union-attr]


def test_heartbeats_in_one_batch(make_store: Factory) -> None:
    """Many hosts' heartbeats in one statement: each host's own values; unknown ids named."""
    store = make_store()
    register(store, reg("h1"), now=100.0)
    register(store, reg("h2", memory_gb=8), now=100.0)
    store.mark_stale(cutoff=150.0)
    beats = [(h, store.heartbeat_values(reg(h, memory_gb=gb, free_gb=free).capacity,
                                        int(gb * GB / 2), 200.0))
             for h, gb, free in (("h1", 2, 50), ("h2", 16, 70), ("nope", 1, 1))]
    assert store.heartbeats(beats) == {"h1", "h2"}
    h1, h2 = store.get_host("h1"), store.get_host("h2")
    assert h1 is not None and h2 is not None and h1.available and h2.available
    assert (h1.capacity.memory_bytes, h2.capacity.memory_bytes) == (2 * GB, 16 * GB)
    assert (h1.memory_budget, h2.memory_budget) == (GB, 8 * GB)
    assert h1.capacity.pools[0].free_bytes == 50 * GB and h2.capacity.pools[0].free_bytes == 70 * GB
    assert store.mark_stale(cutoff=150.0) == []
    assert store.heartbeats([]) == set()


def test_drain_survives_reregistration(make_store: Factory) -> None:
    store = make_store()
    register(store, reg("h1"))
    register(store, reg("h2"))
    assert store.set_drained("h1", True).drained
    register(store, reg("h1"))
    assert store.get_host("h1").drained  # type: ignore[union-attr]
    assert {place(store) for _ in range(4)} == {"h2"}
    store.set_drained("h1", False)
    assert place(store) == "h1"
    with pytest.raises(NotFound):
        store.set_drained("ghost", True)


def test_spread_follows_capacity(make_store: Factory) -> None:
    store = make_store()
    register(store, reg("big", memory_gb=4))
    register(store, reg("small", memory_gb=2))
    got = [place(store) for _ in range(30)]
    assert got.count("big") == 20 and got.count("small") == 10
    assert store.get_host("big").db_count == 20  # type: ignore[union-attr]
    assert place(store, dry=True) in {"big", "small"}
    assert store.get_host("big").db_count == 20  # type: ignore[union-attr]


def test_constraints(make_store: Factory) -> None:
    store = make_store()
    register(store, reg("a", zone="z1", labels={"disk": "nvme"}))
    register(store, reg("b", zone="z2", versions=("15", "16")))
    register(store, reg("c", zone="z2", memory_gb=8))
    assert place(store, Constraints(zone="z1")) == "a"
    assert place(store, Constraints(labels={"disk": "nvme"})) == "a"
    assert place(store, version="16") == "b"
    with pytest.raises(ResourceExhausted, match="no available"):
        place(store, version="17")
    first = place(store, Constraints(anti_affinity_group="g"), group="g")
    second = place(store, Constraints(anti_affinity_group="g"), group="g")
    third = place(store, Constraints(anti_affinity_group="g"), group="g")
    assert {first, second, third} == {"a", "b", "c"}
    with pytest.raises(ResourceExhausted, match="anti-affinity"):
        place(store, Constraints(anti_affinity_group="g"), group="g")
    on = place(store, name="lonely")
    assert place(store, Constraints(avoid_databases=("lonely",))) != on


def test_full_hosts_are_refused_with_the_reason(make_store: Factory) -> None:
    store = make_store()
    register(store, reg("tiny", memory_gb=0.25))  # room for two nano databases
    place(store)
    place(store)
    with pytest.raises(ResourceExhausted, match="memory"):
        place(store)
    register(store, reg("nodisk", free_gb=0.1))
    with pytest.raises(ResourceExhausted, match="pool space"):
        place(store)


def test_catalog_lifecycle(make_store: Factory) -> None:
    store = make_store()
    register(store, reg("h1"))
    res = reservation("shop")
    store.place(PlaceRequest(NANO, "15", Constraints(), res))
    with pytest.raises(AlreadyExists):
        place(store, name="shop")
    assert store.find_database("shop") is None  # reserved, not created yet
    db = CatalogEntry("db1", "shop", "h1", "nano", "15", "tank", NANO.memory_bytes,
                      NANO.disk_bytes, created_at=time.time(), main_branch_id="br1")
    store.confirm(res.id, db)
    assert store.get_entry(res.id) is None
    assert store.find_database("shop") == store.find_database("db1") == db
    store.add_branch("br2", "db1")
    assert store.branch_database("br2") == "db1"
    assert [e.id for e in store.list_databases("h1")] == ["db1"]
    store.release("db1")
    assert store.find_database("db1") is None and store.branch_database("br2") is None
    assert store.get_host("h1").db_count == 0  # type: ignore[union-attr]


def test_reservations_expire(make_store: Factory) -> None:
    store = make_store()
    register(store, reg("h1"))
    place(store, name="later")
    assert store.get_host("h1").db_count == 1  # type: ignore[union-attr]
    assert store.expire_reservations(time.time() + 3600) == 1
    assert store.get_host("h1").db_count == 0  # type: ignore[union-attr]


def test_rebuild_host_catalog(make_store: Factory) -> None:
    store = make_store()
    register(store, reg("h1"))
    old = CatalogEntry("old", "old", "h1", "nano", "15", created_at=1.0)
    store.replace_host_catalog("h1", [old], {"b-old": "old"})
    place(store, name="pending")  # a reservation survives the rebuild
    register(store, reg("h2"))
    entries = [CatalogEntry(f"d{i}", f"n{i}", "h1", "nano", "15", "tank", NANO.memory_bytes,
                            created_at=float(i)) for i in range(3)]
    store.replace_host_catalog("h1", entries, {"b0": "d0", "b1": "d1", "stray": "zz"})
    assert [e.id for e in store.list_databases("h1")] == ["d0", "d1", "d2"]
    assert store.branch_database("b1") == "d1" and store.branch_database("stray") is None
    assert store.branch_database("b-old") is None
    # The same database found on another host moves there.
    store.replace_host_catalog("h2", [CatalogEntry("d0", "n0", "h2", "nano", "15")], {})
    assert store.find_database("n0").host_id == "h2"  # type: ignore[union-attr]
    # d1, d2 and the reservation.
    assert store.get_host("h1").db_count == 3  # type: ignore[union-attr]


def test_concurrent_placements_never_overcommit(make_store: Factory) -> None:
    # Two coordinators (store instances) on one database, eight threads each.
    stores = [make_store(), make_store()]
    register(stores[0], reg("only", memory_gb=NANO.memory_bytes * 5 / GB))
    ok: list[str] = []
    refused: list[Exception] = []

    def worker(store: SqlStore) -> None:
        for _ in range(2):
            try:
                ok.append(place(store))
            except ResourceExhausted as exc:
                refused.append(exc)

    threads = [threading.Thread(target=worker, args=(stores[i % 2],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 5 and len(refused) == 27
    host = stores[1].get_host("only")
    assert host is not None and host.memory_reserved == 5 * NANO.memory_bytes


def test_ranking_in_sql_matches_scoring(make_store: Factory) -> None:
    """The store's SQL fast path picks what scoring.choose picks."""
    import random

    from cygnet.coordinator import scoring
    from cygnet.coordinator.convert import candidate

    store = make_store()
    rng = random.Random(3)
    for i in range(8):
        register(store, reg(f"h{i}", memory_gb=rng.choice([1, 4, 48, 128, 256]),
                            free_gb=rng.uniform(80, 98)))
    for _ in range(40):
        cands = [candidate(h) for h in store.list_hosts()]
        expected = scoring.choose(cands, NANO, Constraints(), set())
        got = store.place(PlaceRequest(NANO, "15", Constraints(), reservation()))
        assert (got.host_id, round(got.score, 9)) == (expected.host_id, round(expected.score, 9))


# --- batched reservations, the lease and its fence (store/reserve.py) ---------------------


def item(host_id: str, name: str | None = None, request_id: str = "") -> reserve.Item:
    values = list(entry_values(reservation(name)))
    values[2], values[10] = host_id, request_id
    return reserve.Item(tuple(values), host_id, NANO.memory_bytes, NANO.disk_bytes)


def test_batch_reserves_only_where_room_is_left(make_store: Factory) -> None:
    store = make_store()
    register(store, reg("roomy"))
    register(store, reg("tight", memory_gb=0.2))  # room for two nano databases
    epoch = store.hold_lease("me", 0, 30)
    assert epoch > 0
    got = store.commit_batch(epoch, [item("roomy"), item("tight"), item("tight"),
                                     item("roomy", "taken")])
    assert got == ["ok", "ok", "ok", "ok"]
    # A third on `tight` does not fit, and the name is taken: nothing of either is written.
    got = store.commit_batch(epoch, [item("tight"), item("roomy", "taken"), item("roomy")])
    assert got == ["full", "exists", "ok"]
    roomy, tight = store.get_host("roomy"), store.get_host("tight")
    assert roomy is not None and tight is not None
    assert (roomy.db_count, tight.db_count) == (3, 2)
    assert roomy.memory_reserved == 3 * NANO.memory_bytes
    assert roomy.pending_disk == 3 * NANO.disk_bytes
    # A request id placed before gets its first reservation back, and nothing new.
    first = item("roomy", request_id="req-1")
    assert store.commit_batch(epoch, [first]) == ["ok"]
    again = store.commit_batch(epoch, [item("tight", request_id="req-1")])
    assert again == [f"retry {first.values[0]} roomy"]
    assert store.get_host("roomy").db_count == 4  # type: ignore[union-attr]


def test_lease_moves_and_the_old_epoch_is_fenced(make_store: Factory) -> None:
    first, second = make_store(), make_store()
    register(first, reg("h1"))
    old = first.hold_lease("first", 0, 1.0)
    assert old > 0 and first.hold_lease("first", old, 1.0) == old
    assert second.hold_lease("second", 0, 1.0) == 0  # the lease has not run out
    time.sleep(1.2)  # `first` is paused (SIGSTOP): it renews nothing
    new = second.hold_lease("second", 0, 30)
    assert new == old + 1 and second.leader() == (new, "second")
    with pytest.raises(reserve.Fenced):
        first.commit_batch(old, [item("h1")])
    assert first.hold_lease("first", old, 1.0) == 0  # awake again, it learns it lost
    assert not first.list_databases() and not first.find_request("x")
    host = first.get_host("h1")
    assert host is not None and host.db_count == 0
    assert second.commit_batch(new, [item("h1")]) == ["ok"]
    second.give_up_lease("second", new)
    assert first.hold_lease("first", 0, 30) == new + 1  # a clean stop hands over at once


def test_housekeeping_of_an_old_epoch_is_fenced(make_store: Factory) -> None:
    """A paused leader that wakes marks no host down and expires no reservation."""
    first, second = make_store(), make_store()
    register(first, reg("h1"), now=100.0)
    place(first, name="later")
    old = first.hold_lease("first", 0, 0.2)
    time.sleep(0.4)  # `first` is paused: its lease runs out
    new = second.hold_lease("second", 0, 30)
    assert new == old + 1
    with pytest.raises(reserve.Fenced):
        first.mark_stale(150.0, old)
    with pytest.raises(reserve.Fenced):
        first.expire_reservations(time.time() + 3600, old)
    host = first.get_host("h1")
    assert host is not None and host.available and host.db_count == 1
    assert second.mark_stale(150.0, new) == ["h1"]
    assert second.expire_reservations(time.time() + 3600, new) == 1


def test_move_journal_locks_renews_and_hands_over_stale_moves(make_store: Factory) -> None:
    """One move per database across coordinators (two stores on one database); a move
    nobody renews is taken once, by one recoverer; its row goes only with its holder."""
    one, two = MoveJournal(make_store()), MoveJournal(make_store())
    assert one.begin("db1", "h1", "h2", "coord-a", now=100.0) is None
    held = two.begin("db1", "h1", "h3", "coord-b", now=101.0)
    assert held is not None and (held.holder, held.to_host, held.age) == ("coord-a", "h2", 1.0)
    assert one.begin("db2", "h2", "h1", "coord-a", now=100.0) is None
    assert one.renew("db1", "coord-a", now=140.0)
    assert not two.renew("db1", "coord-b", now=140.0)  # not its move
    assert [r.database_id for r in two.stale(10.0, now=141.0)] == ["db2"]
    assert two.take("db2", "coord-b", 10.0, now=141.0)
    assert not one.take("db2", "coord-c", 10.0, now=141.0)  # taken: fresh
    one.finish("db2", "coord-a")  # no longer its row: nothing happens
    assert one.get("db2") is not None
    assert not one.renew("db2", "coord-a")  # the old holder learns it lost the row
    two.finish("db2", "coord-b")
    assert two.get("db2") is None
    assert one.begin("db2", "h1", "h2", "coord-a", now=150.0) is None  # free again
    assert two.stale(12.0, now=151.0) == []


def test_move_journal_times_rows_by_the_store_clock(make_store: Factory) -> None:
    """Without `now`, the store's own clock: a fresh row is not stale, and turns stale
    once it has gone unrenewed for longer than asked."""
    journal = MoveJournal(make_store())
    assert journal.begin("db1", "h1", "h2", "coord-a") is None
    assert journal.stale(5.0) == []
    time.sleep(0.3)
    (rec,) = journal.stale(0.2)
    assert rec.database_id == "db1" and 0.2 < rec.age < 5.0
    assert journal.take("db1", "coord-b", 0.2)
    assert journal.stale(0.2) == []  # taken: renewed by the taker
    assert journal.renew("db1", "coord-b") and not journal.renew("db1", "coord-a")


def test_host_reports_never_move_a_database_that_is_being_moved(make_store: Factory) -> None:
    """Both hosts of a move hold a copy until it ends: their reports leave the catalog
    where the move put it; once the move's row is gone, a report places it again."""
    store = make_store()
    journal = MoveJournal(store)
    for h in ("h1", "h2"):
        register(store, reg(h))
    on = {h: CatalogEntry("d0", "n0", h, "nano", "15", created_at=1.0) for h in ("h1", "h2")}
    store.replace_host_catalog("h1", [on["h1"]], {"b0": "d0"})
    assert journal.begin("d0", "h1", "h2", "coord-a") is None
    store.replace_host_catalog("h2", [on["h2"]], {"b0": "d0"})  # the target's copy
    assert store.get_entry("d0").host_id == "h1"  # type: ignore[union-attr]
    store.confirm("d0", on["h2"])  # the move's catalog switch
    store.replace_host_catalog("h1", [on["h1"]], {"b0": "d0"})  # the source's stopped copy
    store.replace_host_catalog("h2", [on["h2"]], {"b0": "d0"})
    assert store.get_entry("d0").host_id == "h2"  # type: ignore[union-attr]
    assert store.branch_database("b0") == "d0"
    journal.finish("d0", "coord-a")
    store.replace_host_catalog("h1", [on["h1"]], {})  # no move: the report places it
    assert store.get_entry("d0").host_id == "h1"  # type: ignore[union-attr]


def test_store_going_away_mid_batch_leaves_nothing_half_written(pg_server: PgServer) -> None:
    """Sessions killed under batched reservations: each batch is all or nothing."""
    import psycopg

    from cygnet.errors import Unavailable

    dsn = pg_server.new_database()
    store = PostgresStore(dsn, pool_size=3)
    for i in range(3):
        register(store, reg(f"h{i}", memory_gb=64))
    epoch = store.hold_lease("me", 0, 600)
    outcomes: list[str] = []

    def worker(n: int) -> None:
        for j in range(40):
            try:
                outcomes.extend(store.commit_batch(epoch, [item(f"h{(n + j + k) % 3}")
                                                           for k in range(5)]))
            except Unavailable:
                outcomes.append("unavailable")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    dbname = dsn.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        while any(t.is_alive() for t in threads):
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "datname = %s AND pid <> pg_backend_pid()", (dbname,))
            time.sleep(0.02)
    for t in threads:
        t.join()
    assert "unavailable" in outcomes and "ok" in outcomes
    check = PostgresStore(dsn, pool_size=1)
    try:
        with check.transaction() as tx:
            rows = tx.q("SELECT host_id, COUNT(*), SUM(memory_bytes), SUM(disk_bytes) "
                        "FROM databases GROUP BY host_id")
        counted = {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}
        for host in check.list_hosts():
            got = counted.get(host.id, (0, 0, 0))
            assert (host.db_count, host.memory_reserved, host.pending_disk) == got, host.id
        # A batch whose COMMIT went through as its session died is answered UNAVAILABLE
        # (a retry with the request id finds it): rows may exceed what was answered "ok".
        stored = sum(c for c, _, _ in counted.values())
        assert outcomes.count("ok") <= stored <= outcomes.count("ok") + 5 * outcomes.count(
            "unavailable")
    finally:
        check.close()
        store.close()
