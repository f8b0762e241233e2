"""zfs-fuse loses a mount made at the same moment as another (zfs/mount_lock.py):
mounting verbs wait for the host's mount lock, and many made at once all mount."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cygnet.zfs import Zfs, mount_lock
from tests.harness import WORK, FilePool

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not mount_lock.needed(), reason="only zfs-fuse needs the lock")]


@pytest.fixture(scope="module")
def pools() -> Iterator[tuple[FilePool, FilePool]]:
    a, b = FilePool.create("256M"), FilePool.create("256M")
    yield a, b
    a.destroy()
    b.destroy()


def test_a_create_waits_for_the_lock_held_by_another_process(
        pools: tuple[FilePool, FilePool]) -> None:
    pool = pools[0].name
    mountpoint = WORK / "mounts" / f"{pool}-waits"
    holder = subprocess.Popen(["flock", str(mount_lock.LOCK_PATH), "sleep", "1.5"])
    try:
        time.sleep(0.3)  # flock(1) has the lock

        async def create() -> float:
            started = time.monotonic()
            await Zfs().create(f"{pool}/waits", {"mountpoint": str(mountpoint)})
            return time.monotonic() - started

        took = asyncio.run(create())
    finally:
        holder.wait(timeout=10)
    assert took >= 0.9, f"create finished in {took:.2f} s while the lock was held"
    assert os.path.ismount(mountpoint)


def test_many_first_datasets_on_two_pools_at_once_all_mount(
        pools: tuple[FilePool, FilePool]) -> None:
    """What hung zfs-fuse for every pool on the host before the lock (two
    cygnetds making their first datasets at the same moment)."""
    base = WORK / "mounts" / "at-once"

    async def create_all(round_: int) -> list[Path]:
        zfs_a, zfs_b = Zfs(), Zfs()  # as two daemons: no state shared but the lock
        jobs, paths = [], []
        for pool, zfs in ((pools[0].name, zfs_a), (pools[1].name, zfs_b)):
            for i in range(4):
                path = base / f"{pool}-{round_}-{i}"
                paths.append(path)
                jobs.append(zfs.create(f"{pool}/r{round_}d{i}", {"mountpoint": str(path)}))
        async with asyncio.timeout(120):
            await asyncio.gather(*jobs)
        return paths

    for round_ in range(5):
        for path in asyncio.run(create_all(round_)):
            assert os.path.ismount(path), path
            # A mount whose FUSE_INIT went unanswered hangs here instead.
            done = subprocess.run(["timeout", "10", "touch", str(path / "file")], check=False)
            assert done.returncode == 0, f"{path} does not answer"
