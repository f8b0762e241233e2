"""Which ZFS the host runs. Probed once; the verbs adapt, nobody else needs to know."""

from __future__ import annotations

from dataclasses import dataclass

from cygnet.zfs.runner import CommandRunner


@dataclass(frozen=True)
class Dialect:
    name: str  # "openzfs" or "zfs-fuse"


OPENZFS = Dialect("openzfs")
ZFS_FUSE = Dialect("zfs-fuse")


async def probe(runner: CommandRunner) -> Dialect:
    """zfs-fuse rejects `zfs list -p`; OpenZFS accepts it. Nothing else is needed to tell."""
    result = await runner.run(["zfs", "list", "-H", "-p", "-o", "name", "-d", "0"], check=False)
    if "invalid option" in result.stderr:
        return ZFS_FUSE
    return OPENZFS
