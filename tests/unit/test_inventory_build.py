"""The inventory built from a listing: each build's records are its own, though the
parsing of a listing's datasets is kept with them (agent/inventory.py)."""

from __future__ import annotations

from cygnet.agent import layout as L
from cygnet.agent.inventory import build
from cygnet.zfs import Dataset

ROOT = "p/cygnet/db/db1"


def listing(desired: str = "suspended") -> dict[str, Dataset]:
    common = {L.P_DATABASE: "db1", L.P_PHASE: "ready", L.P_CREATED: "1.0"}
    datasets = [
        Dataset(ROOT, {"type": "filesystem"}, {L.P_KIND: "database", L.P_ID: "db1",
                                               L.P_NAME: "shop"}),
        Dataset(f"{ROOT}/brmain", {"type": "filesystem", "used": "10"},
                {L.P_KIND: "branch", L.P_ID: "brmain", L.P_NAME: "main", L.P_PARENT: "",
                 L.P_PORT: "5433", L.P_DESIRED: "running", **common}),
        Dataset(f"{ROOT}/brmain@sn1", {"type": "snapshot", "used": "0", "creation": "7"},
                {L.P_SNAP_KIND: "branch-point", L.P_ID: "sn1"}),
        Dataset(f"{ROOT}/brdev", {"type": "filesystem", "origin": f"{ROOT}/brmain@sn1"},
                {L.P_KIND: "branch", L.P_ID: "brdev", L.P_NAME: "dev", L.P_PARENT: "brmain",
                 L.P_DESIRED: desired, **common}),
    ]
    return {ds.name: ds for ds in datasets}


def test_each_build_has_records_of_its_own() -> None:
    datasets = listing()
    first = build(datasets).databases["db1"]
    dev, main = first.branches["brdev"], first.branches["brmain"]
    assert (dev.desired, dev.origin, main.port, main.used_bytes) == (
        "suspended", f"{ROOT}/brmain@sn1", 5433, 10)
    assert [(s.id, s.kind, s.created, s.clones) for s in main.snapshots] == [
        ("sn1", "branch-point", 7.0, [f"{ROOT}/brdev"])]
    # What callers do to their records (a wake sets desired and a port)...
    dev.desired, dev.port = "running", 6000
    main.snapshots[0].clones.append("elsewhere")
    main.snapshots.append(main.snapshots[0])
    # ...is not in the next build from the same listing.
    again = build(datasets).databases["db1"]
    assert (again.branches["brdev"].desired, again.branches["brdev"].port) == ("suspended", 0)
    assert [s.clones for s in again.branches["brmain"].snapshots] == [[f"{ROOT}/brdev"]]
    assert again.branches["brdev"] is not dev


def test_a_dataset_read_again_is_parsed_again() -> None:
    datasets = listing()
    build(datasets)
    datasets[f"{ROOT}/brdev"] = listing("running")[f"{ROOT}/brdev"]  # as a refresh replaces it
    assert build(datasets).databases["db1"].branches["brdev"].desired == "running"
