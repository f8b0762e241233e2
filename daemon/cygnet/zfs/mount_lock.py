"""One mount at a time per host, on zfs-fuse.

zfs-fuse hands each new mount to its FUSE listener threads through one pipe,
as two separate writes (a header, then the mountpoint). Two mounts made at the
same moment interleave those writes; the listener then reads a garbled header,
the new mount's FUSE_INIT is never answered, and a listener thread blocks on
the pipe while holding the lock every other mount needs. From then on any
access to any zfs-fuse filesystem on the host hangs, until zfs-fuse restarts.

So every command that may mount takes a host-wide `flock` first: all cygnetds
on a machine, the test harness and the scripts (`flock(1)` on the same file)
queue behind each other. The kernel module has no such pipe, so there the lock
is skipped. A flock held by a process goes away when it exits, so a killed
holder never leaves the host locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

LOCK_PATH = Path("/run/lock/cygnet-zfs-mount.lock")

# Verbs that mount (or unmount and mount again) a filesystem.
_MOUNTING = {
    "zfs": frozenset({"create", "clone", "mount", "rename", "rollback", "promote",
                      "receive", "recv"}),
    "zpool": frozenset({"create", "import"}),
}
# `zfs set`/`inherit` remount only for these properties.
_MOUNT_PROPERTIES = ("mountpoint", "canmount")

_POLL_FIRST, _POLL_MAX = 0.002, 0.05


@functools.cache
def needed() -> bool:
    """True on zfs-fuse: no kernel module is loaded (looked up once a process)."""
    return not os.path.exists("/dev/zfs")


def mounts(argv: Sequence[str]) -> bool:
    """Whether `argv` may mount a filesystem."""
    if len(argv) < 2:
        return False
    tool, verb = os.path.basename(argv[0]), argv[1]
    if tool == "zfs" and verb in ("set", "inherit"):
        return any(arg.split("=", 1)[0] in _MOUNT_PROPERTIES for arg in argv[2:])
    if tool == "zpool" and verb == "create" and _option(argv, "-m") == "none":
        return False
    return verb in _MOUNTING.get(tool, frozenset())


def _option(argv: Sequence[str], flag: str) -> str | None:
    """The value after `flag` in `argv`, if any."""
    args = list(argv)
    if flag in args[:-1]:
        return args[args.index(flag) + 1]
    return None


def _locks(argv: Sequence[str]) -> bool:
    return needed() and mounts(argv)


@contextlib.asynccontextmanager
async def held(path: Path = LOCK_PATH) -> AsyncIterator[None]:
    """Holds the host's mount lock; polls, so a cancelled waiter leaves nothing behind.

    Each acquisition opens the file anew: flocks on separate opens exclude each
    other inside one process too, so no in-process lock is needed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        delay = _POLL_FIRST
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
        yield
    finally:
        os.close(fd)  # releases the flock


@contextlib.asynccontextmanager
async def around(argv: Sequence[str]) -> AsyncIterator[None]:
    """The lock when `argv` mounts on a zfs-fuse host; nothing otherwise."""
    if _locks(argv):
        async with held():
            yield
    else:
        yield


def wrapped(argv: Sequence[str]) -> list[str]:
    """`argv` behind flock(1) on the same lock, for code that runs zfs by itself."""
    if _locks(argv):
        return ["flock", str(LOCK_PATH), *argv]
    return list(argv)
