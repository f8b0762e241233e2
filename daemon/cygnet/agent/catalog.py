"""The daemon's in-memory catalog: every dataset and snapshot below POOL/cygnet.

ZFS stays the source of truth: the catalog is read whole at start and at each
resync (agent/supervisor.py, every minute). In between it learns of changes
from the writes themselves: every ZFS verb that changes something goes
through `TrackedZfs`, which marks what it touched, and the next read of the
catalog re-reads just that (one `zfs get` of a dataset, or of one database
after a `zfs promote`). An operation therefore costs the same with 1 or 1,000
branches on the host: a recursive `zfs get` on zfs-fuse costs about 3 ms per
dataset, 3 s at 1,000 branches and their branch points.

Marks are set after a write returns (or fails), so a read that raced the
write is repeated by the next one. What changes without a write (space used
by Postgres, or properties set by hand) is seen at the next resync, except
databases' own properties, re-read by `Host.inventory` (their count is small).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping

from cygnet.agent import layout as L
from cygnet.agent.catalog_file import Journal, Saved
from cygnet.states import Desired
from cygnet.zfs import Dataset, DatasetNotFound, Zfs
from cygnet.zfs.kernel_mounts import mount_points
from cygnet.zfs.verbs import LISTED_NATIVE

log = logging.getLogger("cygnet.agent")

# What the catalog reads of each dataset: the listing's natives, whether it may be
# mounted (so a start mounts what is not, without another pass), our properties.
# Whether it is mounted comes from the kernel's table (zfs/kernel_mounts.py).
NATIVE = (*LISTED_NATIVE, "canmount")
READ_PROPS = (*NATIVE, *L.USER_PROPS)


def group_of(name: str) -> str:
    """The catalog group of a dataset or snapshot: its database's dataset
    (POOL/cygnet/db/DBID), else "" (roots, templates, reserves, temporary clones)."""
    parts = name.split("@", 1)[0].split("/")
    if len(parts) >= 4 and parts[1] == "cygnet" and parts[2] == "db":
        return "/".join(parts[:4])
    return ""


def _under(name: str, root: str) -> bool:
    return name == root or name.startswith((root + "/", root + "@"))


class Catalog:
    def __init__(self, zfs: Zfs, pools: tuple[str, ...]) -> None:
        self.zfs = zfs
        self.pools = pools
        self.loaded = False
        # Datasets by group, then by name, in ZFS's listing order (parents first).
        self.groups: dict[str, dict[str, Dataset]] = {}
        # Marks, each with the sequence number of the write that set it.
        self._names: dict[str, int] = {}  # re-read alone
        self._trees: dict[str, int] = {}  # re-read with everything below
        self._seq = 0
        self._lock = asyncio.Lock()  # one refresh at a time
        self._load_lock = asyncio.Lock()  # one load at a time
        self._load_started: int | None = None
        self._reread_during_load: dict[str, bool] = {}  # name -> whole tree
        self.reads = 0  # zfs reads made by refreshes (for tests and metrics)
        # Started from the copy saved at the last clean stop (agent/catalog_file.py),
        # until a load reads ZFS whole.
        self.from_saved = False
        # Bumped at every change of `groups`: a build from an unchanged catalog may
        # be reused by readers that change nothing (Host.shared_inventory).
        self.version = 0
        # Where each write's names go before it starts, once the catalog is kept on
        # disk (agent/catalog_file.py); and how many writes are under way.
        self.journal: Journal | None = None
        self.writing = 0

    # --- the journal (called by TrackedZfs before each write) -----------------

    def intend(self, name: str, tree: bool = False) -> None:
        """`name` (or everything below it) is about to be written."""
        self.writing += 1
        if self.journal is not None:
            self.journal.intend(name, tree)

    @contextlib.contextmanager
    def write(self, *names: str, tree: bool = False) -> Iterator[None]:
        """Around a write of `names` (everything below them, with `tree`): journalled
        before, marked after, finished or not."""
        for name in names:
            self.intend(name, tree)
        try:
            yield
        finally:
            self.writing -= len(names)
            for name in names:
                (self.touched_tree if tree else self.touched)(name)

    @property
    def quiet(self) -> bool:
        """No write under way and every write read back: the moment a save may
        start the journal afresh."""
        return self.loaded and not self.dirty and self.writing == 0

    # --- marks (called by TrackedZfs after each write) -------------------------

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def touched(self, name: str) -> None:
        self._names[name] = self._next()

    def touched_tree(self, name: str) -> None:
        self._trees[name] = self._next()

    def dropped(self, name: str) -> None:
        """`name` and everything below it were destroyed."""
        self.version += 1
        group = self.groups.get(group_of(name), {})
        for key in [k for k in group if _under(k, name)]:
            del group[key]
        self.touched(name)  # confirms it is gone (or finds what is left)

    @property
    def dirty(self) -> bool:
        return bool(self._names or self._trees) or not self.loaded or self._lock.locked()

    # --- reads ----------------------------------------------------------------

    async def load(self) -> None:
        """Everything, from ZFS: at start and at each resync. Readers are not held
        up meanwhile: what they re-read during the listing is marked again after."""
        async with self._load_lock:
            started = self._seq  # writes marked after this may be missing from the listing
            self._load_started = started
            groups: dict[str, dict[str, Dataset]] = {}
            try:
                for pool in self.pools:
                    self.reads += 1
                    self._merge(groups, await self.zfs.get_props(
                        L.root(pool), READ_PROPS, recursive=True))
            except BaseException:
                # What was read before stays current through the marks (a resync
                # cut short by a stop, say); a first load leaves nothing to read.
                self.loaded = self.loaded and bool(self.groups)
                raise
            finally:
                self._load_started = None
            async with self._lock:
                self.groups, self.loaded, self.from_saved = groups, True, False
                self.version += 1
                for marks in (self._names, self._trees):
                    for key in [k for k, seq in marks.items() if seq <= started]:
                        del marks[key]
                for name, tree in self._reread_during_load.items():
                    (self.touched_tree if tree else self.touched)(name)
                self._reread_during_load.clear()

    async def adopt(self, saved: Saved) -> None:
        """Starts from a saved catalog instead of a load (agent/catalog_file.py),
        reading again what was written since it was saved."""
        self.groups, self.loaded, self.from_saved = saved.groups, True, True
        self.version += 1
        for name, tree in saved.intents.items():
            (self.touched_tree if tree else self.touched)(name)
        await self.refresh()

    async def refresh(self) -> None:
        """Re-reads what writes marked since the last read."""
        if not self.loaded:
            await self.load()
            return
        if not (self._names or self._trees or self._lock.locked()):
            return
        # A refresh under way holds marks taken from the sets: wait for it.
        async with self._lock:
            trees, names = self._trees, self._names
            self._trees, self._names = {}, {}
            if self._load_started is not None:  # the load's listing may predate these
                self._reread_during_load.update(
                    {k: True for k, seq in trees.items() if seq > self._load_started})
                self._reread_during_load.update(
                    {k: False for k, seq in names.items() if seq > self._load_started})
            try:
                for tree in _outermost(trees):
                    await self._read(tree, recursive=True)
                await self._read_each([n for n in names
                                       if not any(_under(n, t) for t in trees)])
            except BaseException:
                self._trees = trees | self._trees
                self._names = names | self._names
                raise

    async def _read(self, name: str, *, recursive: bool) -> None:
        self.reads += 1
        props = READ_PROPS
        try:
            found = await self.zfs.get_props(name, props, recursive=recursive)
        except DatasetNotFound:
            found = {}
        group = self.groups.setdefault(group_of(name), {})
        if recursive or not found:  # what is not listed any more is gone
            for key in [k for k in group if _under(k, name)]:
                del group[key]
        self._merge(self.groups, found)
        self.version += 1

    async def _read_each(self, names: list[str]) -> None:
        """Several names alone, in one `zfs get` (a process each is 10-40 ms on
        zfs-fuse, and a delete marks names only to confirm they are gone)."""
        if not names:
            return
        self.reads += 1
        found = await self.zfs.get_existing(names, READ_PROPS)
        for name in names:
            if name not in found:  # gone, and what was below it
                group = self.groups.get(group_of(name), {})
                for key in [k for k in group if _under(k, name)]:
                    del group[key]
        self._merge(self.groups, found)
        self.version += 1

    async def reread_databases(self) -> None:
        """The database datasets' own properties, in one `zfs get` of just them (a
        listing with a depth still walks every dataset below, on zfs-fuse)."""
        names = [g for g in self.groups if g]
        if not names:
            return
        self.reads += 1
        try:
            found = await self.zfs.get_many(names, READ_PROPS)
        except DatasetNotFound:  # one went meanwhile: its delete marked it already
            return
        self._merge(self.groups, found)
        self.version += 1

    def unmounted(self) -> list[str]:
        """Filesystems that should be mounted and are not, parents first. Parked
        branches (suspended, unmounted: Host.park) are left unmounted."""
        mounted = mount_points()
        wanted = [ds.name for group in self.groups.values() for ds in group.values()
                  if not ds.is_snapshot and not parked(ds)
                  and ds.native.get("canmount") == "on"
                  and ds.native.get("mountpoint", "none") not in ("none", "legacy", "-",
                                                                  *mounted)
                  # Not in the table by its name: a path through a symlink is
                  # listed resolved, so ask the file system (few get this far).
                  and not os.path.ismount(ds.native["mountpoint"])]
        return sorted(wanted, key=lambda n: (n.count("/"), n))

    @staticmethod
    def _merge(groups: dict[str, dict[str, Dataset]], found: Mapping[str, Dataset]) -> None:
        for name, ds in found.items():
            groups.setdefault(group_of(name), {})[name] = ds

    # --- views ----------------------------------------------------------------

    def datasets(self, group: str | None = None) -> dict[str, Dataset]:
        """A copy of one group (a database's dataset name), or of everything."""
        if group is not None:
            return dict(self.groups.get(group, {}))
        out: dict[str, Dataset] = {}
        for g in sorted(self.groups, key=lambda g: g != ""):  # roots first
            out.update(self.groups[g])
        return out

    def database_groups(self) -> Iterable[str]:
        return [g for g in self.groups if g]


def parked(ds: Dataset) -> bool:
    """A suspended branch: its dataset may stay unmounted until it wakes."""
    return (ds.user.get(L.P_KIND) == "branch"
            and ds.user.get(L.P_DESIRED) == Desired.SUSPENDED)


def _outermost(trees: Iterable[str]) -> list[str]:
    return [t for t in trees if not any(t != o and _under(t, o) for o in trees)]


class TrackedZfs(Zfs):
    """The ZFS verbs, each journalled before it starts (agent/catalog_file.py) and
    marking in the catalog what it changed once it ends."""

    catalog: Catalog | None = None

    def _writing(self, *names: str, tree: bool = False) -> contextlib.AbstractContextManager[None]:
        if self.catalog is None:
            return contextlib.nullcontext()
        return self.catalog.write(*names, tree=tree)

    async def create(self, name: str, props: Mapping[str, str] | None = None) -> None:
        with self._writing(name):
            await super().create(name, props)

    async def snapshot(self, name: str, props: Mapping[str, str] | None = None) -> None:
        with self._writing(name):
            await super().snapshot(name, props)

    async def clone(self, snapshot: str, name: str, props: Mapping[str, str] | None = None) -> None:
        with self._writing(name):
            await super().clone(snapshot, name, props)

    async def destroy(self, name: str, *, recursive: bool = False) -> None:
        catalog = self.catalog
        if catalog is None:
            await super().destroy(name, recursive=recursive)
            return
        catalog.intend(name, tree=True)
        try:
            await super().destroy(name, recursive=recursive)
        except BaseException:
            catalog.touched_tree(name)  # a failure may have destroyed part of it
            raise
        finally:
            catalog.writing -= 1
        catalog.dropped(name)  # (its mark confirms it is gone)

    async def promote(self, name: str) -> None:
        # Snapshots move between datasets, and their clones' origins change.
        with self._writing(name.rsplit("/", 1)[0], tree=True):
            await super().promote(name)

    async def rollback(self, snapshot: str, *, destroy_newer: bool = False) -> None:
        with self._writing(snapshot.split("@", 1)[0], tree=True):
            await super().rollback(snapshot, destroy_newer=destroy_newer)

    async def rename(self, old: str, new: str) -> None:
        with self._writing(old.rsplit("/", 1)[0], new.rsplit("/", 1)[0], tree=True):
            await super().rename(old, new)

    async def mount(self, name: str) -> None:
        with self._writing(name):
            await super().mount(name)

    async def unmount(self, name: str) -> None:
        with self._writing(name):
            await super().unmount(name)

    async def set_props(self, name: str, props: Mapping[str, str]) -> None:
        with self._writing(name):
            await super().set_props(name, props)

    async def inherit(self, name: str, prop: str) -> None:
        with self._writing(name):
            await super().inherit(name, prop)
