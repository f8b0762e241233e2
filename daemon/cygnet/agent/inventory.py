"""What exists on this host: databases, branches and snapshots, built from ZFS
user properties (as the daemon's catalog holds them, agent/catalog.py).

The inventory is derived state: it is rebuilt from the datasets whenever it is
needed, so a daemon that loses its memory loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cygnet.agent import layout as L
from cygnet.errors import NotFound
from cygnet.names import is_id, shown
from cygnet.states import Desired
from cygnet.zfs import Dataset


@dataclass
class SnapshotRecord:
    id: str
    name: str
    dataset: str  # full snapshot name, DATASET@ID
    branch_id: str
    kind: str  # user | branch-point
    created: float
    used_bytes: int
    subscriptions: int  # -1 when unknown
    clones: list[str] = field(default_factory=list)  # datasets cloned from it
    wal_point: str = ""  # where the WAL it holds ends (wal/points.py); "" unknown


@dataclass
class BranchRecord:
    id: str
    name: str
    database_id: str
    parent_id: str
    dataset: str
    origin: str | None  # ZFS origin snapshot
    port: int
    desired: str
    phase: str
    created: float
    request_id: str
    used_bytes: int
    logical_bytes: int
    snapshots: list[SnapshotRecord] = field(default_factory=list)
    # The major this branch's data is in, when an upgrade made it differ from
    # its database's; "" means the database's (docs/versions.md).
    version: str = ""
    # Expiry and protection (agent/expiry.py, agent/protection.py): unix times, 0: none.
    expires_at: float = 0.0
    protected: bool = False
    protected_until: float = 0.0
    # Seconds without a client before it is suspended (agent/scale.py); 0: never,
    # -1: the host's suspend_after.
    suspend_after: int = -1
    # WAL archiving (agent/archive.py): on/off ("" follows the database), the
    # archive generation (0: none yet), the branch point's PARENT_GEN:wal point.
    archive: str = ""
    wal_gen: int = 0
    fork: str = ""
    _index: tuple[list[SnapshotRecord], dict[str, SnapshotRecord]] | None = field(
        default=None, init=False, repr=False, compare=False)

    @property
    def is_main(self) -> bool:
        return not self.parent_id

    def snapshot_at(self, dataset: str) -> SnapshotRecord | None:
        """The snapshot named `dataset` (DATASET@ID): an index, so that a listing of a
        thousand children of one parent does not scan its snapshots a thousand times."""
        index = self._index
        if index is None or index[0] is not self.snapshots or len(index[1]) != len(
                self.snapshots):
            index = self._index = (self.snapshots, {s.dataset: s for s in self.snapshots})
        return index[1].get(dataset)


@dataclass
class DatabaseRecord:
    id: str
    name: str
    dataset: str
    pool: str
    version: str
    size_class: str
    phase: str
    created: float
    request_id: str
    branches: dict[str, BranchRecord] = field(default_factory=dict)
    quota_bytes: int = 0  # ZFS quota of the database's dataset; 0: none
    archive: str = ""  # WAL archiving of its branches: on/off, "" main only (agent/archive.py)
    # What readers derive from a build that nobody changes (Host.shared_inventory),
    # kept with it: a listing's messages (agent/convert.py).
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def version_of(self, branch: BranchRecord) -> str:
        """The major `branch` runs: its own after an upgrade, else the database's."""
        return branch.version or self.version

    @property
    def main(self) -> BranchRecord | None:
        return next((b for b in self.branches.values() if b.is_main), None)

    def branch(self, ref: str) -> BranchRecord:
        """A branch by id (an id-shaped ref) or else by name; an empty ref means `main`."""
        if not ref:
            main = self.main
            if main is None:
                raise NotFound(f"database {self.name!r} has no main branch")
            return main
        if is_id(ref, "br"):
            if ref in self.branches:
                return self.branches[ref]
        else:
            for b in self.branches.values():
                if b.name == ref:
                    return b
        raise NotFound(f"branch {shown(ref)} not found in database {self.name!r}")

    def children(self, branch_id: str) -> list[BranchRecord]:
        return [b for b in self.branches.values() if b.parent_id == branch_id]

    def descendants(self, branch_id: str) -> list[BranchRecord]:
        """All descendants, deepest first: the order they can be destroyed in."""
        out: list[BranchRecord] = []
        for child in self.children(branch_id):
            out.extend(self.descendants(child.id))
            out.append(child)
        return out


@dataclass
class Inventory:
    databases: dict[str, DatabaseRecord]
    templates: dict[str, Dataset]  # template dataset name -> dataset
    datasets: dict[str, Dataset]  # every dataset and snapshot seen, by name
    # Swaps under way (agent/swap.py), by the dataset being replaced: replacements
    # the branch's identity has not moved to yet, and replaced datasets it has left.
    replacements: dict[str, Dataset] = field(default_factory=dict)
    retired: dict[str, Dataset] = field(default_factory=dict)

    def database(self, ref: str) -> DatabaseRecord:
        """A database by id (an id-shaped ref) or else by name."""
        if is_id(ref, "db"):
            if ref in self.databases:
                return self.databases[ref]
        else:
            for db in self.databases.values():
                if db.name == ref and db.phase != L.PHASE_DELETING:
                    return db
        raise NotFound(f"database {shown(ref)} not found")

    def branch_by_id(self, branch_id: str) -> tuple[DatabaseRecord, BranchRecord]:
        for db in self.databases.values():
            if branch_id in db.branches:
                return db, db.branches[branch_id]
        raise NotFound(f"branch {shown(branch_id)} not found")

    def branches(self) -> list[BranchRecord]:
        return [b for db in self.databases.values() for b in db.branches.values()]

    def free_bytes(self, pool: str) -> int:
        """The pool's free space, as any of its datasets reports it (`available`:
        Cygnet sets no quotas), so no extra `zfs get` of the pool is needed."""
        for ds in self.datasets.values():
            if L.pool_of(ds.name) == pool and not ds.is_snapshot and "available" in ds.native:
                return ds.number("available")
        return 0

    def used_ports(self) -> set[int]:
        return {b.port for b in self.branches() if b.port}


def branch_props(b: BranchRecord) -> dict[str, str]:
    """The user properties a branch's dataset is made with (the inventory reads them back)."""
    return {L.P_KIND: "branch", L.P_ID: b.id, L.P_NAME: b.name, L.P_DATABASE: b.database_id,
            L.P_PARENT: b.parent_id, L.P_PORT: str(b.port), L.P_DESIRED: b.desired,
            L.P_PHASE: b.phase, L.P_CREATED: f"{b.created:.3f}", L.P_REQUEST: b.request_id,
            **({L.P_VERSION: b.version} if b.version else {}), **lifetime_props(b),
            **({L.P_SUSPEND_AFTER: str(b.suspend_after)} if b.suspend_after >= 0 else {}),
            **{k: v for k, v in ((L.P_ARCHIVE, b.archive), (L.P_FORK, b.fork),
                                 (L.P_WAL_GEN, str(b.wal_gen) if b.wal_gen else "")) if v}}


def lifetime_props(b: BranchRecord) -> dict[str, str]:
    """Expiry and protection, carried by every dataset the branch is made on."""
    props = {L.P_EXPIRES: f"{b.expires_at:.3f}"} if b.expires_at else {}
    if b.protected:
        props[L.P_PROTECTED] = "on"
        if b.protected_until:
            props[L.P_PROTECTED_UNTIL] = f"{b.protected_until:.3f}"
    return props


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def _database(ds: Dataset) -> DatabaseRecord:
    u = ds.user
    return DatabaseRecord(
        id=u.get(L.P_ID, ""), name=u.get(L.P_NAME, ""), dataset=ds.name,
        pool=L.pool_of(ds.name), version=u.get(L.P_VERSION, ""), size_class=u.get(L.P_SIZE, ""),
        phase=u.get(L.P_PHASE, L.PHASE_READY), created=_float(u.get(L.P_CREATED)),
        request_id=u.get(L.P_REQUEST, ""), quota_bytes=ds.number("quota"),
        archive=u.get(L.P_ARCHIVE, ""),
    )


def _branch(ds: Dataset) -> BranchRecord:
    fields = ds.derived.get("branch")
    if fields is None:  # parsed once per listing: a ListBranches at 1,000 builds them all
        fields = ds.derived["branch"] = _branch_fields(ds)
    return BranchRecord(**fields)  # type: ignore[arg-type]


def _branch_fields(ds: Dataset) -> dict[str, object]:
    u = ds.user
    port = u.get(L.P_PORT, "0")
    return dict(
        id=u.get(L.P_ID, ""), name=u.get(L.P_NAME, ""), database_id=u.get(L.P_DATABASE, ""),
        parent_id=u.get(L.P_PARENT, ""), dataset=ds.name, origin=ds.origin,
        port=int(port) if port.isdigit() else 0, desired=u.get(L.P_DESIRED, Desired.RUNNING),
        phase=u.get(L.P_PHASE, L.PHASE_READY), created=_float(u.get(L.P_CREATED)),
        request_id=u.get(L.P_REQUEST, ""), used_bytes=ds.number("used"),
        logical_bytes=ds.number("referenced"), version=u.get(L.P_VERSION, ""),
        expires_at=_float(u.get(L.P_EXPIRES)), protected=u.get(L.P_PROTECTED) == "on",
        protected_until=_float(u.get(L.P_PROTECTED_UNTIL)),
        suspend_after=int(u[L.P_SUSPEND_AFTER]) if u.get(L.P_SUSPEND_AFTER, "").isdigit() else -1,
        archive=u.get(L.P_ARCHIVE, ""), fork=u.get(L.P_FORK, ""),
        wal_gen=int(u[L.P_WAL_GEN]) if u.get(L.P_WAL_GEN, "").isdigit() else 0,
    )


def snapshot_record(ds: Dataset, branch_id: str) -> SnapshotRecord:
    fields = ds.derived.get("snapshot")
    if fields is None:
        fields = ds.derived["snapshot"] = _snapshot_fields(ds)
    return SnapshotRecord(branch_id=branch_id, **fields)  # type: ignore[arg-type]


def _snapshot_fields(ds: Dataset) -> dict[str, object]:
    u = ds.user
    snap_id = ds.name.split("@", 1)[1]
    return dict(
        id=u.get(L.P_ID, snap_id), name=u.get(L.P_NAME, snap_id), dataset=ds.name,
        kind=u.get(L.P_SNAP_KIND, "user"),
        created=_float(u.get(L.P_CREATED)) or _float(ds.native.get("creation")),
        used_bytes=ds.number("used"),
        subscriptions=int(u[L.P_SUBS]) if u.get(L.P_SUBS, "").isdigit() else -1,
        wal_point=u.get(L.P_WAL_POINT, ""),
    )


def build(datasets: dict[str, Dataset]) -> Inventory:
    """Turns a recursive property listing into databases, branches and snapshots."""
    databases: dict[str, DatabaseRecord] = {}
    templates: dict[str, Dataset] = {}
    branch_datasets: list[Dataset] = []
    snapshot_datasets: list[Dataset] = []
    for ds in datasets.values():  # one pass: 3,000 entries at 1,000 branches
        if "@" in ds.name:
            snapshot_datasets.append(ds)
            continue
        kind = ds.user.get(L.P_KIND)
        if kind == "branch":
            branch_datasets.append(ds)
        elif kind == "database":
            db = _database(ds)
            databases[db.id] = db
        elif kind == "template":
            templates[ds.name] = ds
    replacements: dict[str, Dataset] = {}
    retired: dict[str, Dataset] = {}
    branches_by_dataset: dict[str, BranchRecord] = {}
    for ds in branch_datasets:
        if _swapped_out(ds, datasets, replacements, retired):
            continue
        b = _branch(ds)
        branches_by_dataset[ds.name] = b
        if b.database_id in databases:
            databases[b.database_id].branches[b.id] = b
    snapshots: dict[str, SnapshotRecord] = {}
    for ds in snapshot_datasets:
        owner = branches_by_dataset.get(ds.name.partition("@")[0])
        if owner is not None:
            snap = snapshot_record(ds, owner.id)
            owner.snapshots.append(snap)
            snapshots[ds.name] = snap
    for b in branches_by_dataset.values():
        if b.origin in snapshots:
            snapshots[b.origin].clones.append(b.dataset)
        if len(b.snapshots) > 1:
            b.snapshots.sort(key=lambda s: s.created)
    return Inventory(databases, templates, datasets, replacements, retired)


def _swapped_out(ds: Dataset, datasets: dict[str, Dataset], replacements: dict[str, Dataset],
                 retired: dict[str, Dataset]) -> bool:
    """Whether a swap under way (agent/swap.py) hides this dataset: a replacement
    is not the branch until the replaced dataset records that the identity moved
    (`replaced-by`) or is gone; a replaced dataset is not, once it records it."""
    successor = datasets.get(ds.user.get(L.P_REPLACED_BY, ""))
    if successor is not None:
        retired[ds.name] = successor
        return True
    replaced = datasets.get(ds.user.get(L.P_REPLACES, ""))
    if replaced is not None and not replaced.user.get(L.P_REPLACED_BY):
        replacements[replaced.name] = ds
        return True
    return False
