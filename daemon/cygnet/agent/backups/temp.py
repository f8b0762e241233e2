"""Consistent, readable images of branches: a temporary snapshot and clone.

zfs-fuse has no `.zfs` directory, so a snapshot is read through a clone of
it. Temporary datasets are recognisable (`cygnet:kind=temp` clones below
POOL/cygnet/tmp, `cygnet:snapshot-kind=temp` snapshots) and are always
destroyed: when the operation ends, whatever way it ends, and by the
reconciler at start if a crash left any.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cygnet.agent import layout as L
from cygnet.agent.branches import take_snapshot
from cygnet.agent.host import Host
from cygnet.agent.inventory import BranchRecord
from cygnet.postgres.layout import ClusterLayout
from cygnet.zfs import Dataset, DatasetNotFound, ZfsError

log = logging.getLogger("cygnet.agent")

TEMP = "temp"


def temp_root(pool: str) -> str:
    return f"{L.root(pool)}/tmp"


@dataclass(frozen=True)
class Image:
    """A read-only clone of a snapshot, mounted: its files are the snapshot's."""

    snapshot: str
    clone: str
    pgdata: Path
    taken_at: float
    subscriptions: int  # of the branch when snapshotted (1 when unknown)


class TempImages:
    """Makes images and destroys them all on exit (clones first, then snapshots)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._clones: list[str] = []
        self._snapshots: list[str] = []

    async def __aenter__(self) -> TempImages:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def of_branch(self, branch: BranchRecord) -> Image:
        """CHECKPOINT (if running), snapshot and clone the branch's current state.

        Run it under the database's lock, so the branch cannot go meanwhile."""
        snap_id = L.new_id("tm")
        snapshot, subscriptions = await take_snapshot(self.host, branch, snap_id, TEMP, TEMP, "")
        self._snapshots.append(snapshot)
        taken_at = time.time()
        return await self._clone(snapshot, taken_at, subscriptions)

    async def of_snapshot(self, snapshot: str, taken_at: float = 0.0) -> Image:
        """A clone of an existing snapshot (e.g. a branch's origin)."""
        return await self._clone(snapshot, taken_at, 1)

    async def _clone(self, snapshot: str, taken_at: float, subscriptions: int) -> Image:
        pool = L.pool_of(snapshot)
        root = temp_root(pool)
        if not await self.host.zfs.exists(root):
            with contextlib.suppress(ZfsError):  # a concurrent call made it
                await self.host.zfs.create(root, {"canmount": "off"})
        clone = f"{root}/{L.new_id('tm')}"
        await self.host.zfs.clone(snapshot, clone, {
            L.P_KIND: TEMP, L.P_CREATED: f"{time.time():.3f}", "readonly": "on"})
        self._clones.append(clone)
        pgdata = ClusterLayout(L.mountpoint(self.host.config.mount_root, clone)).pgdata
        return Image(snapshot, clone, pgdata, taken_at, subscriptions)

    async def close(self) -> None:
        for name in [*reversed(self._clones), *reversed(self._snapshots)]:
            try:
                await self.host.zfs.destroy(name, recursive=not name.count("@"))
            except DatasetNotFound:
                pass
            except Exception:  # the reconciler retries at the next start
                log.exception("could not destroy temporary dataset %s", name)
        self._clones.clear()
        self._snapshots.clear()


async def remove_leftovers(host: Host, known: Mapping[str, Dataset] | None = None) -> int:
    """Destroys temporary clones and snapshots a crash left behind; returns how many.
    `known`: the host's datasets as just read (the catalog), instead of listing them."""
    removed = 0
    for pool in host.config.pools:
        datasets = ({n: d for n, d in known.items() if L.pool_of(n) == pool}
                    if known is not None
                    else await host.zfs.list(L.root(pool), (L.P_KIND, L.P_SNAP_KIND)))
        clones = [d.name for d in datasets.values()
                  if not d.is_snapshot and d.user.get(L.P_KIND) == TEMP]
        snapshots = [d.name for d in datasets.values()
                     if d.is_snapshot and d.user.get(L.P_SNAP_KIND) == TEMP]
        for name in [*clones, *snapshots]:
            log.warning("removing temporary dataset %s left by an interrupted operation", name)
            with contextlib.suppress(DatasetNotFound):
                await host.zfs.destroy(name, recursive=not name.count("@"))
            removed += 1
    return removed
