"""Which ZFS the host runs. Probed once; the verbs adapt, nobody else needs to know."""

from __future__ import annotations

from dataclasses import dataclass

from cygnet.zfs.runner import CommandRunner


@dataclass(frozen=True)
class Dialect:
    name: str  # "openzfs" or "zfs-fuse"
    list_parsable: bool  # `zfs list -p` exists
    holds: bool  # `zfs hold` exists
    snapshot_dir: bool  # `.zfs/snapshot` is reachable
    compression: str  # best cheap compression the pool accepts


OPENZFS = Dialect("openzfs", list_parsable=True, holds=True, snapshot_dir=True, compression="lz4")
ZFS_FUSE = Dialect("zfs-fuse", list_parsable=False, holds=False, snapshot_dir=False,
                   compression="lzjb")


async def probe(runner: CommandRunner) -> Dialect:
    """zfs-fuse rejects `zfs list -p`; OpenZFS accepts it. Nothing else is needed to tell."""
    result = await runner.run(["zfs", "list", "-H", "-p", "-o", "name", "-d", "0"], check=False)
    if "invalid option" in result.stderr:
        return ZFS_FUSE
    return OPENZFS
