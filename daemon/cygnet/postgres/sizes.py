"""Size classes: named bundles of memory and connection settings."""

from __future__ import annotations

from dataclasses import dataclass

from cygnet.errors import InvalidArgument

DEFAULT_SIZE_CLASS = "small"


@dataclass(frozen=True)
class SizeClass:
    """Resource settings of one size class; memory sizes in MB."""

    name: str
    shared_buffers_mb: int
    max_connections: int
    work_mem_mb: int
    maintenance_work_mem_mb: int
    effective_cache_size_mb: int
    max_wal_size_mb: int
    max_worker_processes: int
    autovacuum_max_workers: int


# nano is sized so that ~50 idle clusters fit in a few GB: each idle postmaster
# costs its shared memory plus ~6 auxiliary processes.
SIZE_CLASSES: dict[str, SizeClass] = {
    "nano": SizeClass("nano", 16, 20, 2, 16, 128, 256, 4, 1),
    "small": SizeClass("small", 128, 50, 4, 64, 512, 1024, 8, 3),
    "medium": SizeClass("medium", 512, 100, 8, 256, 2048, 2048, 8, 3),
    "large": SizeClass("large", 2048, 200, 16, 1024, 8192, 8192, 16, 5),
}


def size_class(name: str) -> SizeClass:
    """The SizeClass called `name`; "" means small. Unknown names raise InvalidArgument."""
    key = name or DEFAULT_SIZE_CLASS
    try:
        return SIZE_CLASSES[key]
    except KeyError:
        choices = ", ".join(SIZE_CLASSES)
        reason = f"{name!r} is not a size class; must be one of {choices}"
        raise InvalidArgument("size_class", reason) from None
