"""A move round's plan, from a listing of the source's datasets: parents before their
clones, snapshots oldest first, and the round's own snapshots (added without a second
listing while the database is down) last."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cygnet.agent import layout as L
from cygnet.agent.inventory import DatabaseRecord
from cygnet.agent.move_source import MOVE_KIND, _listing_order, _newest_snapshot, plan_of
from cygnet.zfs import Dataset

BASE = "pool/cygnet/db/db1"


def _listing(origins: list[int | None]) -> dict[str, Dataset]:
    """Dataset i is a clone of dataset origins[i]'s snapshot (None: not a clone); each
    has two snapshots, and names run against the lineage so the order must be found."""
    listing = {BASE: Dataset(BASE, native={"type": "filesystem"})}
    n = len(origins)
    for i, parent in enumerate(origins):
        name = f"{BASE}/d{n - i:03d}"
        origin = f"{BASE}/d{n - parent:03d}@s0" if parent is not None else ""
        listing[name] = Dataset(name, native={"type": "filesystem", "origin": origin,
                                              "referenced": "8192"},
                                user={L.P_ID: f"br{i}"})
        for txg in (2, 1):  # listed newest first: the plan sorts by createtxg
            snap = f"{name}@s{txg - 1}"
            listing[snap] = Dataset(snap, native={"type": "snapshot", "createtxg": str(txg)},
                                    user={L.P_SNAP_KIND: "user"})
    return listing


@st.composite
def lineages(draw: st.DrawFn) -> list[int | None]:
    size = draw(st.integers(1, 12))
    return [None if i == 0 else draw(st.one_of(st.none(), st.integers(0, i - 1)))
            for i in range(size)]


@given(lineages())
def test_every_dataset_comes_after_the_one_holding_its_origin(origins: list[int | None]
                                                              ) -> None:
    listing = _listing(origins)
    order = _listing_order(BASE, listing)
    assert sorted(order) == sorted(n for n in listing if n != BASE and "@" not in n)
    for place, name in enumerate(order):
        dataset_origin = listing[name].origin
        origin = dataset_origin.split("@")[0] if dataset_origin else ""
        if origin:
            assert order.index(origin) < place


@given(lineages())
def test_the_rounds_snapshots_come_last_in_the_plan(origins: list[int | None]) -> None:
    listing = _listing(origins)
    made = [f"{n}@mv1-f" for n in _listing_order(BASE, listing)]
    listing |= {snap: _newest_snapshot(snap) for snap in made}
    db = DatabaseRecord("db1", "shop", BASE, "pool", "15", "small", "ready", 0.0, "")
    plan = plan_of(db, listing, "mv1-f", {"br0"})
    assert [d.name for d in plan.datasets] == [n[len(BASE) + 1:]
                                               for n in _listing_order(BASE, listing)]
    for ds in plan.datasets:
        assert [s.name for s in ds.snapshots] == ["s0", "s1", "mv1-f"]
        assert ds.snapshots[-1].properties[L.P_SNAP_KIND] == MOVE_KIND
        assert ds.running == (ds.branch_id == "br0")
        if ds.origin_dataset:
            assert ds.origin_snapshot == "s0"
