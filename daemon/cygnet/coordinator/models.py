"""The coordinator's records: hosts, their capacity, catalog entries and demands."""

from __future__ import annotations

from dataclasses import dataclass, field

from cygnet.errors import InvalidArgument
from cygnet.postgres.sizes import DEFAULT_SIZE_CLASS, SIZE_CLASSES

MB = 1024 * 1024
GB_UNIT = 1024 * MB

# What one cluster of each size class is budgeted: memory (shared buffers, the
# per-connection work memory it will plausibly use, the auxiliary processes)
# and pool space (max_wal_size plus room to grow before the next heartbeat
# shows the real free space).
MEMORY_MB = {"nano": 96, "small": 512, "medium": 2048, "large": 8192}
DISK_MB = {"nano": 256, "small": 2048, "medium": 10240, "large": 51200}


@dataclass(frozen=True)
class Demand:
    size_class: str
    memory_bytes: int
    disk_bytes: int

    @classmethod
    def for_size(cls, name: str) -> Demand:
        key = name or DEFAULT_SIZE_CLASS
        if key not in SIZE_CLASSES:
            choices = ", ".join(SIZE_CLASSES)
            raise InvalidArgument("size_class", f"{name!r} is not a size class; one of {choices}")
        return cls(key, MEMORY_MB[key] * MB, DISK_MB[key] * MB)


@dataclass(frozen=True)
class PoolInfo:
    name: str
    size_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class Capacity:
    """What a host reports about itself at registration and in each heartbeat."""

    pools: tuple[PoolInfo, ...] = ()
    memory_bytes: int = 0
    running_clusters: int = 0
    postgres_versions: tuple[str, ...] = ()
    database_count: int = 0

    @property
    def best_pool(self) -> PoolInfo | None:
        """The pool a new database would get: the agent picks the one with most free space."""
        return max(self.pools, key=lambda p: p.free_bytes, default=None)


@dataclass(frozen=True)
class Registration:
    host_id: str
    address: str
    zone: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    capacity: Capacity = Capacity()
    max_clusters: int = 0
    version: str = ""


@dataclass(frozen=True)
class HostRecord:
    id: str
    address: str
    zone: str
    labels: dict[str, str]
    capacity: Capacity
    max_clusters: int
    memory_budget: int
    drained: bool
    available: bool
    last_heartbeat: float
    version: str
    # Catalog counters: databases placed here, their memory, and pool space
    # reserved since the last heartbeat (which reports the real free space).
    db_count: int = 0
    memory_reserved: int = 0
    pending_disk: int = 0


@dataclass(frozen=True)
class Constraints:
    zone: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    anti_affinity_group: str = ""
    avoid_databases: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogEntry:
    """Where a database lives. `state` is "reserved" until the host created it."""

    id: str
    name: str | None
    host_id: str
    size_class: str
    postgres_version: str
    pool: str = ""
    memory_bytes: int = 0
    disk_bytes: int = 0
    group: str = ""
    state: str = "ready"
    request_id: str = ""
    expires_at: float = 0.0
    created_at: float = 0.0
    main_branch_id: str = ""
    branch_count: int = 0


@dataclass(frozen=True)
class PlaceRequest:
    demand: Demand
    version: str
    constraints: Constraints
    # The reservation to write, or None for a dry run.
    reservation: CatalogEntry | None
