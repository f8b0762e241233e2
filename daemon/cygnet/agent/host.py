"""The daemon's shared context: config, ZFS, clusters, ports and the locks."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from cygnet.agent import inventory
from cygnet.agent.clusters import Clusters
from cygnet.agent.config import AgentConfig
from cygnet.agent.ports import PortAllocator
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

    async def inventory(self) -> inventory.Inventory:
        return await inventory.load(self.zfs, self.config.pools)
