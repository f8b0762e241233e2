"""Disk used on the shared pool, read the way zfs-fuse reports it (`zfs get -H -p`)."""

from __future__ import annotations

import itertools
import subprocess
import time

_ticks = itertools.count()


def zfs_used(name: str) -> int:
    """`used` of a pool's root dataset or of any dataset, in bytes."""
    out = subprocess.run(["zfs", "get", "-H", "-p", "-o", "value", "used", name],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return int(out.strip())


def sync_txg(pool: str) -> None:
    """Makes ZFS commit its open transaction group.

    Small writes reach `used` only when their txg commits, and frees of
    destroyed blocks land a txg or two later. zfs-fuse has no `zpool sync`,
    but setting a property is a sync task that waits for the commit.
    """
    subprocess.run(["zfs", "set", f"bench:txg={next(_ticks)}", pool],
                   capture_output=True, check=True, timeout=120)


def settled_used(pool: str, timeout: float = 30.0) -> int:
    """The pool's `used` after committed txgs stop changing it."""
    deadline = time.monotonic() + timeout
    sync_txg(pool)
    last = zfs_used(pool)
    while time.monotonic() < deadline:
        sync_txg(pool)
        now = zfs_used(pool)
        if now == last:
            break
        last = now
        time.sleep(0.2)
    return last
