"""User snapshots of a branch: named, immutable points to branch from or reset to."""

from __future__ import annotations

from cygnet.agent import layout as L
from cygnet.agent.branches import find_snapshot, take_snapshot
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, SnapshotRecord, snapshot_record
from cygnet.errors import AlreadyExists, FailedPrecondition
from cygnet.names import validate_name


async def create_snapshot(host: Host, branch: BranchRecord, name: str, request_id: str
                          ) -> SnapshotRecord:
    name = validate_name("name", name)
    if any(s.name == name for s in branch.snapshots if s.kind == "user"):
        raise AlreadyExists(f"snapshot {name!r} already exists on branch {branch.name!r}")
    if branch.phase != L.PHASE_READY:
        raise FailedPrecondition(f"branch {branch.name!r} is {branch.phase}")
    await host.space.require_free(branch.dataset, "a snapshot")  # before CHECKPOINT
    snap_id = L.new_id("sn")
    dataset, _ = await take_snapshot(host, branch, snap_id, name, "user", request_id)
    props = await host.zfs.get_props(dataset, ["used", "creation", *L.USER_PROPS])
    return snapshot_record(props[dataset], branch.id)


async def delete_snapshot(host: Host, branch: BranchRecord, ref: str,
                          branch_names: dict[str, str]) -> SnapshotRecord:
    """Refuses while branches are cloned from the snapshot, naming them."""
    snap = find_snapshot(branch, ref)
    if snap.clones:
        names = ", ".join(sorted(branch_names.get(c, c) for c in snap.clones))
        raise FailedPrecondition(f"snapshot {snap.name!r} has dependent branches: {names}")
    await host.zfs.destroy(snap.dataset)
    return snap
