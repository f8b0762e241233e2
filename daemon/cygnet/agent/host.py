"""The daemon's shared context: config, ZFS, clusters, ports, pool space and the locks."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import defaultdict
from dataclasses import dataclass, field

from cygnet import __version__
from cygnet.agent import layout
from cygnet.agent.clusters import Clusters
from cygnet.agent.config import AgentConfig
from cygnet.agent.inventory import (
    BranchRecord,
    DatabaseRecord,
    Inventory,
    build,
    load,
    load_catalog,
    load_database,
)
from cygnet.agent.ports import PortAllocator
from cygnet.agent.space import PoolSpace
from cygnet.errors import ResourceExhausted
from cygnet.postgres.versions import installed_versions
from cygnet.zfs import OutOfSpace, Zfs
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
    # The databases as last read from ZFS (whole, or one at a time after each
    # operation): for lookups by name and for the supervisor. Never the basis
    # of a change: operations re-read their database under its lock.
    known: dict[str, DatabaseRecord] = field(default_factory=dict)

    @classmethod
    def create(cls, config: AgentConfig, zfs: Zfs | None = None) -> Host:
        zfs = zfs or Zfs()
        space = PoolSpace(config, zfs)
        # A property write refused on a full pool gives up the pool's reserve.
        zfs.make_room = space.release_reserve
        return cls(config, zfs, Clusters(config),
                   PortAllocator(config.port_min, config.port_max), space)

    async def status(self) -> HostStatus:
        inv = await self.catalog()
        pools = [PoolView(await pool_status(self.zfs.runner, p), await self.space.reserve_of(p))
                 for p in self.config.pools]
        branches = inv.branches()
        return HostStatus(
            host_id=self.config.host_id or socket.gethostname(), hostname=socket.gethostname(),
            version=__version__, pools=pools,
            running_clusters=sum(1 for b in branches if self.clusters.live(b) is not None),
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

    async def inventory(self) -> Inventory:
        """Everything on the host (costly with many datasets); resyncs caches."""
        inv = await load(self.zfs, self.config.pools)
        self.known = dict(inv.databases)
        self.ports.sync(inv.used_ports())
        return inv

    async def catalog(self) -> Inventory:
        """Databases and branches, without snapshots."""
        inv = await load_catalog(self.zfs, self.config.pools)
        self.known = dict(inv.databases)
        return inv

    async def database_inventory(self, database_id: str, pool: str = "", *,
                                 snapshots: bool = True) -> Inventory:
        """One database, freshly read; the cache learns it (or forgets it if gone)."""
        if not pool:
            known = self.known.get(database_id)
            if known is None:
                await self.catalog()
                known = self.known.get(database_id)
            if known is None:
                return build({})
            pool = known.pool
        inv = await load_database(self.zfs, pool, database_id, snapshots=snapshots)
        if database_id in inv.databases:
            self.known[database_id] = inv.databases[database_id]
        else:
            self.known.pop(database_id, None)
        return inv

    def find_database(self, ref: str) -> DatabaseRecord | None:
        """By id or name, from the cache."""
        if ref in self.known:
            return self.known[ref]
        return next((d for d in self.known.values()
                     if d.name == ref and d.phase != layout.PHASE_DELETING), None)

    def find_branch(self, branch_id: str) -> DatabaseRecord | None:
        """The database holding a branch id, from the cache."""
        return next((d for d in self.known.values() if branch_id in d.branches), None)
