"""Pool-level verbs: space and health, and file-backed pools for demos and tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


async def pool_exists(runner: CommandRunner, pool: str) -> bool:
    result = await runner.run(["zpool", "list", "-H", "-o", "name", pool], check=False)
    return result.returncode == 0


async def create_file_pool(runner: CommandRunner, pool: str, image: Path, size_bytes: int) -> None:
    """A pool on one sparse file: for demos, tests and hosts without spare disks."""
    image.parent.mkdir(parents=True, exist_ok=True)
    with open(image, "ab") as f:
        f.truncate(max(size_bytes, f.tell()))
    await runner.run(["zpool", "create", "-m", "none", pool, str(image)])


async def destroy_pool(runner: CommandRunner, pool: str) -> None:
    await runner.run(["zpool", "destroy", "-f", pool])
