"""Wakes the supervisor the moment a postmaster exits, instead of at its next round.

One pidfd per live postmaster (Linux 5.3+), polled by the event loop: it
becomes readable when the process exits. Where pidfds are missing the
supervisor's periodic round still finds the death, only later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

log = logging.getLogger("cygnet.agent")


class DeathWatch:
    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self._fds: dict[int, int] = {}  # pid -> pidfd

    def watch(self, pid: int) -> None:
        """Watches `pid` (a postmaster just seen alive) unless it is watched already."""
        if pid in self._fds:
            return
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):  # gone already, or no pidfd on this kernel
            return
        self._fds[pid] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, pid)

    def _exited(self, pid: int) -> None:
        self._forget(pid)
        self.wake.set()

    def _forget(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    async def pause(self, stop: asyncio.Event, timeout: float) -> None:
        """Returns after `timeout`, or sooner when `stop` is set or a watched pid exits."""
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self.wake.clear()

    def close(self) -> None:
        for pid in list(self._fds):
            self._forget(pid)
