"""`zfs send` and `zfs receive` as byte streams (agent/transfer.py carries them between hosts).

The other verbs run to completion through the runner; these two run for as
long as their data flows, so they get their own small wrappers: argv lists,
stderr kept for the error, the child killed when the caller stops early.
zfs-fuse (pool version 23) knows `send [-i base] snap` and `receive [-F] name`
only: no size estimate (-n -v), no resume token, no `-o` on receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator

from cygnet.zfs import mount_lock
from cygnet.zfs.errors import ZfsError, error_from
from cygnet.zfs.verbs import Zfs

log = logging.getLogger("cygnet.zfs")

CHUNK = 1 << 20
# A full stream cut short into a new name leaves a half-received dataset until the
# ZFS daemon discards it (zfs-fuse: usually within 0.1 s); after this long it is
# destroyed here (see Receiver._discard_partial).
DISCARD_WAIT = 5.0


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def send(snapshot: str, base: str = "", chunk: int = CHUNK
               ) -> AsyncGenerator[bytes, None]:
    """Yields the stream of `zfs send [-i base] snapshot`; raises a ZfsError if it fails.

    On zfs-fuse the daemon, not the `zfs` process, writes into the pipe (it gets the
    descriptor), so the pipe is ours, made here: closing our end is what stops a
    send cut short (the daemon's next write fails), and waiting for the `zfs`
    process never waits for the daemon's copy of the pipe.
    """
    argv = ["zfs", "send", *(["-i", base] if base else []), snapshot]
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=write_fd,
            stderr=asyncio.subprocess.PIPE)
    finally:
        os.close(write_fd)
    assert proc.stderr is not None
    reader = asyncio.StreamReader(limit=2 * chunk)
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0))
    try:
        while data := await reader.read(chunk):
            yield data
        stderr = (await proc.stderr.read()).decode(errors="replace")
        if await proc.wait() != 0:
            raise error_from(argv, proc.returncode or 1, stderr)
    finally:
        transport.close()
        await _kill(proc)


class Receiver:
    """`zfs receive [-F] target`, fed chunk by chunk; `finish` waits for it to apply."""

    def __init__(self, target: str, *, force: bool = False, zfs: Zfs | None = None) -> None:
        self.target, self.force = target, force
        self.argv = ["zfs", "receive", *(["-F"] if force else []), target]
        self.proc: asyncio.subprocess.Process | None = None
        self.zfs = zfs or Zfs()
        self.creates = False  # a full stream into a name that did not exist
        self.applied = False

    async def __aenter__(self) -> Receiver:
        self.creates = not self.force and not await self.zfs.exists(self.target)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        return self

    async def write(self, data: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            await self._failed()

    async def finish(self) -> None:
        """Ends the stream; zfs then mounts what it received, so under the mount lock."""
        assert self.proc is not None and self.proc.stdin is not None
        async with mount_lock.around(self.argv):
            self.proc.stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self.proc.stdin.wait_closed()
            code = await self.proc.wait()
        if code != 0:
            await self._failed()
        self.applied = True

    async def _failed(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        stderr = (await self.proc.stderr.read()).decode(errors="replace")
        code = await self.proc.wait()
        raise error_from(self.argv, code or 1, stderr)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            # An early exit (error, cancellation) ends the stream and kills receive:
            # zfs discards a partial stream, so nothing half-received stays behind.
            # The pipe goes first: zfs-fuse's daemon reads it, and waits for more.
            if self.proc.stdin is not None and not self.proc.stdin.is_closing():
                self.proc.stdin.close()
            await _kill(self.proc)
        if self.creates and not self.applied:
            await asyncio.shield(self._discard_partial())

    async def _discard_partial(self) -> None:
        """Makes sure a cut-short full stream leaves no dataset under its new name.

        zfs-fuse's daemon discards it by itself, but at times leaves it behind
        (until the pool is next imported), and the name stays taken. So it is
        waited for, then destroyed here (`destroy` retries while it is busy).
        """
        deadline = asyncio.get_running_loop().time() + DISCARD_WAIT
        while await self.zfs.exists(self.target):
            if asyncio.get_running_loop().time() >= deadline:
                try:
                    await self.zfs.destroy(self.target, recursive=True)
                    log.warning("a cut-short stream into %s left it behind: destroyed",
                                self.target)
                except ZfsError as exc:
                    log.warning("a cut-short stream into %s left it behind, and it could "
                                "not be destroyed: %s", self.target, exc)
                return
            await asyncio.sleep(0.1)
