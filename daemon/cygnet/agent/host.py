"""The daemon's shared context: config, ZFS, clusters, ports, pool space and the locks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import defaultdict
from dataclasses import dataclass, field

from cygnet import __version__
from cygnet.agent import layout
from cygnet.agent.catalog import Catalog, TrackedZfs, group_of, parked
from cygnet.agent.catalog_keeper import CatalogKeeper
from cygnet.agent.clusters import Clusters
from cygnet.agent.config import AgentConfig
from cygnet.agent.inventory import BranchRecord, DatabaseRecord, Inventory, build
from cygnet.agent.liveness import LiveView
from cygnet.agent.ports import PortAllocator
from cygnet.agent.space import PoolSpace, mount_each
from cygnet.errors import ResourceExhausted
from cygnet.postgres.versions import installed_versions
from cygnet.states import Desired
from cygnet.zfs import Dataset, OutOfSpace, Zfs, ZfsError
from cygnet.zfs.pools import PoolStatus, pool_status

log = logging.getLogger("cygnet.agent")


@dataclass(frozen=True)
class PoolView:
    status: PoolStatus
    reserve_bytes: int  # held back for deletes on a full pool; 0 while released


@dataclass(frozen=True)
class HostStatus:
    """What GetHostStatus and the coordinator's heartbeats report."""

    host_id: str
    hostname: str
    version: str
    pools: list[PoolView]
    running_clusters: int
    postgres_versions: list[str]
    database_count: int
    branch_count: int
    zfs_dialect: str


@dataclass
class Host:
    config: AgentConfig
    zfs: Zfs
    clusters: Clusters
    ports: PortAllocator
    space: PoolSpace
    # Serialises name checks and dataset creation across the host (short).
    catalog_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Serialises the operations on one database (by database id).
    db_locks: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock))
    # The databases as last built from the catalog (whole, or one at a time
    # after each operation): for lookups by name and for the supervisor.
    known: dict[str, DatabaseRecord] = field(default_factory=dict)
    # Every dataset below POOL/cygnet, read at start and resync, kept current by
    # the writes of `zfs` (agent/catalog.py): operations read it, not ZFS.
    datasets: Catalog | None = None
    # shared_inventory's builds, by database id, with the catalog version they are of.
    _shared: dict[str, tuple[int, Inventory]] = field(default_factory=dict)
    # Keeps the catalog on disk for the next start (agent/catalog_keeper.py).
    _keeper: CatalogKeeper | None = None

    @classmethod
    def create(cls, config: AgentConfig, zfs: Zfs | None = None) -> Host:
        zfs = zfs or TrackedZfs()
        space = PoolSpace(config, zfs)
        # A property write refused on a full pool gives up the pool's reserve.
        zfs.make_room = space.release_reserve
        host = cls(config, zfs, Clusters(config),
                   PortAllocator(config.port_min, config.port_max), space)
        host.datasets = Catalog(zfs, config.pools)
        if isinstance(zfs, TrackedZfs):
            zfs.catalog = host.datasets
        return host

    @property
    def _catalog(self) -> Catalog:
        if self.datasets is None:
            self.datasets = Catalog(self.zfs, self.config.pools)
        return self.datasets

    async def status(self) -> HostStatus:
        inv = await self.catalog()
        pools = [PoolView(await pool_status(self.zfs.runner, p), await self.space.reserve_of(p))
                 for p in self.config.pools]
        branches = inv.branches()
        live = LiveView(self.clusters)
        return HostStatus(
            host_id=self.config.host_id or socket.gethostname(), hostname=socket.gethostname(),
            version=__version__, pools=pools,
            running_clusters=sum(1 for b in branches if live.live(b)),
            postgres_versions=sorted(installed_versions(self.config.postgres_root)),
            database_count=len(inv.databases), branch_count=len(branches),
            zfs_dialect=(await self.zfs.dialect()).name)

    async def mark_deleting(self, dataset: str) -> None:
        """Records phase=deleting before a delete. On a full pool whose reserve is spent
        the delete goes on unmarked (`zfs destroy` needs no room): a crash midway then
        leaves what remains as it was, for the user to delete again."""
        try:
            await self.zfs.set_props(dataset, {layout.P_PHASE: layout.PHASE_DELETING})
        except OutOfSpace:
            log.warning("pool full: deleting %s without marking it first", dataset)

    async def require_free_for(self, branch_id: str, what: str) -> None:
        """ResourceExhausted when the (cached) branch's dataset is short of space."""
        db = self.find_branch(branch_id)
        if db is not None:
            await self.space.require_free(db.branches[branch_id].dataset, what)

    def mounted(self, branch: BranchRecord) -> bool:
        """Whether the branch's dataset is mounted where its files should be."""
        return self.clusters.files(branch).mount.is_mount()

    def parks(self, branch: BranchRecord) -> bool:
        """Whether the branch's dataset is to stay unmounted: suspended, with
        park_suspended on (catalog.parked says the same of a listed dataset)."""
        return self.config.park_suspended and branch.desired == Desired.SUSPENDED

    async def mount_branch(self, branch: BranchRecord) -> bool:
        """Mounts a branch's own dataset when it is not (a parked branch, or a host
        that imported its pools unmounted); True when it is mounted now."""
        if self.mounted(branch):
            return True
        try:
            await self.zfs.mount(branch.dataset)
        except ZfsError as exc:
            log.error("could not mount %s: %s", branch.dataset, exc)
        return self.mounted(branch)

    async def park(self, branch: BranchRecord) -> None:
        """Unmounts a suspended branch's dataset (park_suspended); a failure leaves it
        mounted, which costs a mount and nothing else. Under the database's lock."""
        if not self.parks(branch) or not self.mounted(branch):
            return
        if not await self._still_suspended(branch.dataset):
            return
        try:
            await self.zfs.unmount(branch.dataset)
        except ZfsError as exc:
            log.warning("branch %s stays mounted: %s", branch.id, exc)

    async def _still_suspended(self, dataset: str) -> bool:
        """What ZFS says now, through the catalog: a cached record may have been built
        while a StopBranch's write was under way, and still say suspended after it."""
        catalog = self._catalog
        await catalog.refresh()
        ds = catalog.groups.get(group_of(dataset), {}).get(dataset)
        return ds is not None and parked(ds)

    def ensure_headroom(self, inv: Inventory, pool: str) -> None:
        """ResourceExhausted when the pool is (nearly) full, before anything is made."""
        free = inv.free_bytes(pool)
        if free < self.config.min_free_bytes:
            raise ResourceExhausted(
                f"pool {pool} is full: {free // 2**20} MiB free, "
                f"{self.config.min_free_bytes // 2**20} MiB needed for a new cluster")

    async def refresh_space(self, branch: BranchRecord) -> None:
        """Reads a branch's space figures alone: cheaper than a whole inventory."""
        props = await self.zfs.get_props(branch.dataset, ["used", "referenced"])
        ds = props[branch.dataset]
        branch.used_bytes, branch.logical_bytes = ds.number("used"), ds.number("referenced")

    async def resync(self) -> Inventory:
        """Everything, read from ZFS again (costly with many datasets: at start and
        at the supervisor's resync); the catalog, ports and cache follow."""
        await self._catalog.load()
        return self._everything()

    async def start_catalog(self) -> Inventory:
        """At start: the catalog kept on disk if it can serve this start (the
        supervisor reads ZFS whole right after), else a read of everything."""
        saved = await self.keeper.take()
        if saved is None:
            return await self.resync()
        log.info("starting from the saved catalog (%d datasets) and %d names written since; "
                 "ZFS is read whole in the background",
                 sum(len(g) for g in saved.groups.values()), len(saved.intents))
        await self._catalog.adopt(saved)
        return self._everything()

    def receiving(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Around a `zfs receive` into `name` (not a TrackedZfs verb): journalled and
        marked as every write is (agent/catalog.py)."""
        return self._catalog.write(name, tree=True)

    @property
    def keeper(self) -> CatalogKeeper:
        if self._keeper is None:
            self._keeper = CatalogKeeper(self.config, self.zfs, self._catalog)
        return self._keeper

    async def mount_unmounted(self) -> list[str]:
        """Mounts cygnetd's datasets that the catalog (just read whole) shows unmounted:
        a rebooted host may import pools without mounting them. The same as
        PoolSpace.mount_own, without another recursive `zfs get`."""
        return await mount_each(self.zfs, list(self._catalog.unmounted()))

    async def inventory(self) -> Inventory:
        """Everything on the host, from the catalog; databases' own properties
        are read again (one `zfs get` line each), so settings set by hand count."""
        catalog = self._catalog
        await catalog.refresh()
        await catalog.reread_databases()
        return self._everything()

    def _everything(self) -> Inventory:
        inv = build(self._catalog.datasets())
        self.known = dict(inv.databases)
        self.ports.sync(inv.used_ports())
        return inv

    async def catalog(self) -> Inventory:
        """Databases and branches, without snapshots, from the catalog. Under the
        catalog lock (a new database) the pools' free space is read again."""
        catalog = self._catalog
        if self.catalog_lock.locked():
            for pool in self.config.pools:
                catalog.touched(layout.root(pool))
        await catalog.refresh()
        inv = build({n: ds for n, ds in catalog.datasets().items() if "@" not in n})
        self.known = dict(inv.databases)
        return inv

    async def database_inventory(self, database_id: str, pool: str = "", *,
                                 snapshots: bool = True) -> Inventory:
        """One database, from the catalog; the cache learns it (or forgets it if
        gone). Under the database's lock (a change) its free space is read again."""
        datasets = await self.database_datasets(database_id, pool)
        if not snapshots:
            datasets = {n: ds for n, ds in datasets.items() if "@" not in n}
        return self._learn(database_id, build(datasets))

    async def shared_inventory(self, database_id: str) -> Inventory:
        """database_inventory, for readers that change nothing in it (listings): the
        build is kept and handed out again while the catalog is unchanged, since
        building 1,000 branches' records is most of a listing's time."""
        datasets = await self.database_datasets(database_id)
        kept = self._shared.get(database_id)
        if kept is None or kept[0] != self._catalog.version:
            kept = self._shared[database_id] = (self._catalog.version, build(datasets))
        if database_id not in kept[1].databases:  # (its records stay out of `known`,
            self.known.pop(database_id, None)     # which others may change)
            self._shared.pop(database_id, None)
        return kept[1]

    async def database_datasets(self, database_id: str, pool: str = "") -> dict[str, Dataset]:
        """The catalog's datasets and snapshots of one database, current (a copy).
        Under the database's lock (a change) its free space is read again."""
        group = await self._fresh_group(database_id, pool)
        return self._catalog.datasets(group) if group else {}

    async def _fresh_group(self, database_id: str, pool: str) -> str:
        catalog = self._catalog
        await catalog.refresh()
        group = self._group_of(database_id, pool)
        if group and self.db_locks[database_id].locked():
            catalog.touched(group)
            await catalog.refresh()
        return group

    def _learn(self, database_id: str, inv: Inventory) -> Inventory:
        if database_id in inv.databases:
            self.known[database_id] = inv.databases[database_id]
        else:
            self.known.pop(database_id, None)
        return inv

    def _group_of(self, database_id: str, pool: str) -> str:
        """The catalog group (dataset) of a database, "" if it is not there."""
        pools = [pool] if pool else list(self.config.pools)
        groups = self._catalog.groups
        return next((layout.database(p, database_id) for p in pools
                     if layout.database(p, database_id) in groups), "")

    def find_database(self, ref: str) -> DatabaseRecord | None:
        """By id or name, from the cache."""
        if ref in self.known:
            return self.known[ref]
        return next((d for d in self.known.values()
                     if d.name == ref and d.phase != layout.PHASE_DELETING), None)

    def find_branch(self, branch_id: str) -> DatabaseRecord | None:
        """The database holding a branch id, from the cache."""
        return next((d for d in self.known.values() if branch_id in d.branches), None)
