"""The daemon's shared context: config, ZFS, clusters, ports and the locks."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from cygnet.agent import inventory, layout
from cygnet.agent.clusters import Clusters
from cygnet.agent.config import AgentConfig
from cygnet.agent.ports import PortAllocator
from cygnet.errors import ResourceExhausted
from cygnet.zfs import Zfs


@dataclass
class Host:
    config: AgentConfig
    zfs: Zfs
    clusters: Clusters
    ports: PortAllocator
    # Serialises name checks and dataset creation across the host (short).
    catalog_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Serialises the operations on one database (by database id).
    db_locks: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock))

    @classmethod
    def create(cls, config: AgentConfig, zfs: Zfs | None = None) -> Host:
        return cls(config, zfs or Zfs(), Clusters(config),
                   PortAllocator(config.port_min, config.port_max))

    def ensure_headroom(self, inv: inventory.Inventory, pool: str) -> None:
        """ResourceExhausted when the pool is (nearly) full, before anything is made."""
        root = inv.datasets.get(layout.root(pool))
        free = root.number("available") if root is not None else 0
        if free < self.config.min_free_bytes:
            raise ResourceExhausted(
                f"pool {pool} is full: {free // 2**20} MiB free, "
                f"{self.config.min_free_bytes // 2**20} MiB needed for a new cluster")

    async def refresh_space(self, branch: inventory.BranchRecord) -> None:
        """Reads a branch's space figures alone: cheaper than a whole inventory."""
        props = await self.zfs.get_props(branch.dataset, ["used", "referenced"])
        ds = props[branch.dataset]
        branch.used_bytes, branch.logical_bytes = ds.number("used"), ds.number("referenced")

    async def inventory(self) -> inventory.Inventory:
        return await inventory.load(self.zfs, self.config.pools)
