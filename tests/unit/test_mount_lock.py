"""Which commands take the host's mount lock, and that the lock excludes."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from cygnet.zfs import mount_lock


@pytest.mark.parametrize("argv", [
    ["zfs", "create", "-o", "mountpoint=/x", "p/a"],
    ["zfs", "clone", "p/a@s", "p/b"],
    ["zfs", "mount", "p/a"],
    ["zfs", "rename", "p/a", "p/b"],
    ["zfs", "promote", "p/b"],
    ["zfs", "rollback", "-r", "p/a@s"],
    ["zfs", "receive", "-F", "p/a"],
    ["zfs", "set", "mountpoint=/y", "p/a"],
    ["zfs", "inherit", "canmount", "p/a"],
    ["/usr/sbin/zpool", "import", "-d", "/dev", "p"],
    ["zpool", "create", "p", "/img"],
])
def test_commands_that_mount_take_the_lock(argv: list[str]) -> None:
    assert mount_lock.mounts(argv)


@pytest.mark.parametrize("argv", [
    ["zfs", "snapshot", "p/a@s"],
    ["zfs", "destroy", "-r", "p/a"],
    ["zfs", "get", "-H", "-p", "mountpoint", "p/a"],
    ["zfs", "set", "cygnet:phase=ready", "p/a"],
    ["zfs", "send", "p/a@s"],
    ["zpool", "create", "-o", "cachefile=none", "-m", "none", "p", "/img"],
    ["zpool", "list"],
    ["zfs"],
    ["pg_ctl", "start"],
])
def test_other_commands_do_not(argv: list[str]) -> None:
    assert not mount_lock.mounts(argv)


def test_wrapped_puts_flock_in_front_only_of_mounting_commands() -> None:
    clone = ["zfs", "clone", "p/a@s", "p/b"]
    if mount_lock.needed():
        assert mount_lock.wrapped(clone) == ["flock", str(mount_lock.LOCK_PATH), *clone]
    else:
        assert mount_lock.wrapped(clone) == clone
    assert mount_lock.wrapped(["zfs", "snapshot", "p/a@s"]) == ["zfs", "snapshot", "p/a@s"]


def test_holders_exclude_each_other_in_one_process_and_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "mount.lock"

    async def scenario() -> list[str]:
        order: list[str] = []

        async def hold(name: str, seconds: float) -> None:
            async with mount_lock.held(path):
                order.append(f"{name} in")
                await asyncio.sleep(seconds)
                order.append(f"{name} out")

        await asyncio.gather(hold("a", 0.2), hold("b", 0.0), hold("c", 0.0))
        # flock(1) on the same file waits for an in-process holder as well.
        async with mount_lock.held(path):
            blocked = subprocess.run(["flock", "-n", str(path), "true"], check=False)
            order.append(f"flock -n while held: {blocked.returncode}")
        free = subprocess.run(["flock", "-n", str(path), "true"], check=False)
        order.append(f"flock -n after: {free.returncode}")
        return order

    order = asyncio.run(scenario())
    held = order[:6]
    for i in range(0, 6, 2):  # never two inside at once
        assert held[i].endswith(" in") and held[i + 1] == held[i].replace(" in", " out")
    assert order[6:] == ["flock -n while held: 1", "flock -n after: 0"]


def test_a_cancelled_waiter_leaves_the_lock_free(tmp_path: Path) -> None:
    path = tmp_path / "mount.lock"

    async def scenario() -> None:
        async with mount_lock.held(path):
            async def wait() -> None:
                async with mount_lock.held(path):
                    raise AssertionError("entered while held")
            waiter = asyncio.create_task(wait())
            await asyncio.sleep(0.05)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with asyncio.timeout(2):
            async with mount_lock.held(path):
                pass

    asyncio.run(scenario())
