"""Masked snapshots on ZFS: finding one to clone, and removing those of a branch.

    POOL/cygnet/db/DBID/mkID           a masked copy of a parent's snapshot
                                       (cygnet:kind=masked; temp while it is built)
    POOL/cygnet/db/DBID/mkID@masked    what masked branches clone: cygnet:masked=1
                                       and cygnet:masked-lsn, where its WAL starts

A masked copy is a clone of a snapshot of its parent branch (kind
masked-source), so the parent cannot be destroyed while it exists: destroying
a branch first removes its masked copies (their own masked branches are its
children, gone before it).
"""

from __future__ import annotations

import contextlib
import logging

from cygnet.agent import layout as L
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord, DatabaseRecord
from cygnet.zfs import DatasetNotFound, HasDependents

log = logging.getLogger("cygnet.agent")

MASKED = "masked"  # cygnet:kind of the copy, cygnet:snapshot-kind of its snapshot
SOURCE_KIND = "masked-source"  # cygnet:snapshot-kind of the parent's snapshot it clones
SNAP = "masked"
P_MASKED = L.P_MASKED
P_MASKED_LSN = L.P_MASKED_LSN
P_MASK_OF = L.P_MASK_OF
P_MASK_RULES = L.P_MASK_RULES


def is_masked(ds_user: dict[str, str]) -> bool:
    return ds_user.get(P_MASKED) == "1"


async def find(host: Host, db: DatabaseRecord, parent: BranchRecord, digest: str) -> str:
    """The newest masked snapshot of `parent` made with these rules, or ""."""
    datasets = await host.database_datasets(db.id)  # the catalog's: no listing
    best, newest = "", -1.0
    for ds in datasets.values():
        u = ds.user
        if ds.is_snapshot or u.get(L.P_KIND) != MASKED or u.get(P_MASK_OF) != parent.id:
            continue
        snap = f"{ds.name}@{SNAP}"
        if u.get(P_MASK_RULES) == digest and snap in datasets:
            created = float(u.get(L.P_CREATED, "0") or 0)
            if created > newest:
                best, newest = snap, created
    return best


async def destroy(host: Host, copy: str) -> bool:
    """Destroys a masked copy and the parent snapshot it came from; False if still cloned."""
    try:
        ds = (await host.zfs.list(copy, (), depth=0)).get(copy)
        origin = ds.origin if ds is not None else None
        await host.zfs.destroy(copy, recursive=True)
    except DatasetNotFound:
        return True
    except HasDependents:
        return False
    if origin:
        with contextlib.suppress(DatasetNotFound, HasDependents):
            await host.zfs.destroy(origin)
    return True


async def drop_of(host: Host, branch: BranchRecord) -> None:
    """Removes the masked copies made from `branch` (before the branch is destroyed).
    From the catalog: a listing of the database's datasets, even one level deep,
    walks all of them on zfs-fuse (3.5 s of every delete at 1,000 branches)."""
    database_ds = branch.dataset.rsplit("/", 1)[0]
    datasets = await host.database_datasets(branch.database_id)
    copies = [ds.name for ds in datasets.values() if not ds.is_snapshot
              and ds.name.rsplit("/", 1)[0] == database_ds
              and ds.user.get(P_MASK_OF) == branch.id
              and ds.user.get(L.P_KIND) in (MASKED, "temp")]
    for copy in copies:
        if not await destroy(host, copy):
            log.warning("masked copy %s of %s still has clones", copy, branch.id)


async def is_masked_clone(host: Host, branch: BranchRecord) -> bool:
    """Whether the branch is a clone of a masked snapshot (a masked branch)."""
    if not branch.origin or "@" not in branch.origin:
        return False
    try:
        props = await host.zfs.get_props(branch.origin, [P_MASKED])
    except DatasetNotFound:
        return False
    ds = props.get(branch.origin)
    return ds is not None and is_masked(ds.user)
