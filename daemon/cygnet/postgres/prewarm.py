"""Reading a cluster's relation files into the page cache while recovery replays.

Replay is single-threaded and reads each page it changes: on a fresh clone every
such read is a round trip through the filesystem (through FUSE on zfs-fuse),
tens of microseconds each, which is most of a point-in-time branch's wait. A
few threads reading the files sequentially, in large blocks, beside the
replay turn those into page-cache hits. Bounded by a byte budget, and stopped
as soon as recovery ends.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

BLOCK = 1 << 20
THREADS = 2


class Prewarmer:
    def __init__(self, pgdata: Path, budget_bytes: int) -> None:
        self.pgdata = pgdata
        self.budget = budget_bytes
        self.read_bytes = 0
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._files: list[Path] = []

    def _plan(self) -> list[Path]:
        """Relation files, largest first (tables a replay touches at random), within budget."""
        sized = []
        for root, _, names in os.walk(self.pgdata / "base"):
            for name in names:
                path = Path(root, name)
                try:
                    sized.append((path.stat().st_size, path))
                except OSError:
                    continue
        sized.sort(key=lambda item: -item[0])
        chosen, total = [], 0
        for size, path in sized:
            if total + size > self.budget:
                continue
            chosen.append(path)
            total += size
        return chosen

    def run(self) -> None:
        """Reads the planned files with THREADS threads; returns when done or cancelled."""
        self._files = self._plan()
        workers = [threading.Thread(target=self._work, daemon=True) for _ in range(THREADS)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()

    def _work(self) -> None:
        buffer = bytearray(BLOCK)
        while not self.cancelled.is_set():
            with self._lock:
                if not self._files:
                    return
                path = self._files.pop(0)
            try:
                with open(path, "rb", buffering=0) as f:
                    while not self.cancelled.is_set():
                        n = f.readinto(buffer)
                        if not n:
                            break
                        with self._lock:
                            self.read_bytes += n
            except OSError:
                continue  # dropped meanwhile (a temp relation): nothing to warm
