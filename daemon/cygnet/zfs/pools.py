"""Pool-level reads: space and health."""

from __future__ import annotations

from dataclasses import dataclass

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
    space = await runner.run(["zfs", "get", "-H", "-p", "-o", "property,value",
                              "used,available", pool])
    values = dict(line.split("\t", 1) for line in space.stdout.splitlines() if "\t" in line)
    used, free = int(values.get("used", "0")), int(values.get("available", "0"))
    health = await runner.run(["zpool", "list", "-H", "-o", "health", pool])
    return PoolStatus(pool, used + free, free, used, health.stdout.strip() or "UNKNOWN")
