"""Progress of long operations, from worker threads to a streaming RPC."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cygnet.backup import ProgressFn

T = TypeVar("T")

INTERVAL = 0.25  # seconds between two progress events of one phase


@dataclass(frozen=True)
class Progress:
    phase: str
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0


class Reporter:
    """Queues Progress events for the caller; safe to call from any thread.

    Events of one phase are thinned to one per INTERVAL; a new phase always goes.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Progress] = asyncio.Queue()
        self._lock = threading.Lock()
        self._phase = ""
        self._last = 0.0

    def __call__(self, event: Progress) -> None:
        now = time.monotonic()
        with self._lock:
            if event.phase == self._phase and now - self._last < INTERVAL:
                return
            self._phase, self._last = event.phase, now
        self._loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def phase(self, name: str) -> None:
        self(Progress(name))

    def counter(self, phase: str, bytes_total: int, files_total: int) -> ProgressFn:
        """A library progress hook (files done, bytes done) reporting under `phase`."""
        def hook(files: int, done: int) -> None:
            self(Progress(phase, done, bytes_total, files, files_total))

        return hook


async def stream(run: Callable[[Reporter], Awaitable[T]]) -> AsyncIterator[Progress | T]:
    """Runs `run` as its own task and yields its progress, then its result.

    The task is not cancelled when the caller goes away: an operation that
    made temporary datasets must get to its own clean-up.
    """
    reporter = Reporter()
    task = asyncio.ensure_future(run(reporter))
    while True:
        getter = asyncio.ensure_future(reporter.queue.get())
        done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            yield getter.result()
            continue
        getter.cancel()
        break
    yield task.result()


def tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) of the regular files below root."""
    files = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_mode & 0o170000 == 0o100000:
                files += 1
                size += st.st_size
    return files, size
