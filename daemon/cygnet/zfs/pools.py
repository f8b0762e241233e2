"""Pool-level reads: space and health."""

from __future__ import annotations

from dataclasses import dataclass

from cygnet.zfs.parsing import ZfsOutputError, get_rows
from cygnet.zfs.runner import CommandRunner


@dataclass(frozen=True)
class PoolStatus:
    name: str
    size_bytes: int
    free_bytes: int
    used_bytes: int
    health: str


async def pool_status(runner: CommandRunner, pool: str) -> PoolStatus:
    """Space as the root dataset sees it (what datasets can still use) and pool health.

    `zfs get -p` works on both dialects, unlike `zpool list -p`.
    """
    space = await runner.run(["zfs", "get", "-H", "-p", "-o", "name,property,value,source",
                              "used,available", pool])
    values = {prop: value for _, prop, value, _ in get_rows(space.stdout)}
    used, free = _bytes(values, "used"), _bytes(values, "available")
    health = await runner.run(["zpool", "list", "-H", "-o", "health", pool])
    return PoolStatus(pool, used + free, free, used, health.stdout.strip() or "UNKNOWN")


def _bytes(values: dict[str, str], prop: str) -> int:
    """A byte count, or an error: a pool read as 0 bytes free would refuse every create."""
    value = values.get(prop, "")
    if not value.isdigit():
        raise ZfsOutputError(f"zfs get printed no byte count for {prop}: {value!r}",
                             argv=["zfs", "get", prop])
    return int(value)
