"""Which archived WAL a recovery reads: chosen by LSN range along the ancestry.

A branch shares its parent's WAL below its fork and writes different WAL
above it, under the same timeline, segment names and system identifier; a
rewind does the same to the branch's own earlier generation. So a file is
never picked by its name alone: each segment's LSN range says which
generation of the chain owns it, and only that generation's copy is used. A
segment that straddles a generation's start holds shared WAL below it, so
the older copy serves when the newer generation never archived it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cygnet.wal.lsn import SEGMENT_SIZE, is_history, segment
from cygnet.wal.repo import Generation, WalObject, WalRepository


@dataclass(frozen=True)
class Link:
    """A chain element: a generation and its archived files."""

    generation: Generation
    objects: dict[str, WalObject]


@dataclass(frozen=True)
class Window:
    """The recoverable stretch of a chain from LSN `start`: up to `end_lsn`,
    written at the latest at `end_time` (0: nothing archived past `start`)."""

    end_lsn: int
    end_time: float


def load_chain(repo: WalRepository, head: Generation) -> list[Link]:
    """`head` (recorded or not) and every generation it continues, newest first."""
    chain = [head] + (repo.chain(*head.base) if head.base else [])
    return [Link(g, repo.objects(g.branch_id, g.gen)) for g in chain]


def owner(chain: list[Link], name: str) -> tuple[int, WalObject] | None:
    """The copy of WAL file `name` that belongs to this chain's history, if archived,
    and the index of the generation it comes from."""
    seg = segment(name)
    if seg is None:
        # History files: the newest generation that has one (timelines grow down the chain).
        return next(((i, link.objects[name]) for i, link in enumerate(chain)
                     if name in link.objects), None)
    for i, link in enumerate(chain):
        start = link.generation.start_lsn
        if start >= seg.end:
            continue  # wholly below this generation: its base's history
        found = link.objects.get(name)
        if found is not None:
            return i, found
        if seg.start >= start:
            return None  # this generation's own WAL, not archived: never an older copy
    return None


def selection(chain: list[Link], from_lsn: int) -> list[WalObject]:
    """Every file of the chain's history from `from_lsn` on, in LSN order (history first)."""
    names: set[str] = set()
    for link in chain:
        names.update(link.objects)
    history, segments = [], []
    for name in sorted(names):
        if name.endswith(".partial"):
            continue
        owned = owner(chain, name)
        if owned is None:
            continue
        obj, seg = owned[1], segment(name)
        if seg is None:
            if is_history(name):
                history.append(obj)
        elif seg.end > from_lsn:
            segments.append((seg.start, seg.timeline, obj))
    segments.sort(key=lambda s: (s[0], s[1]))
    return history + [obj for _, _, obj in segments]


def window(chain: list[Link], from_lsn: int) -> Window:
    """How far the chain's archive reaches without a gap, from `from_lsn`.

    A copy from an older generation is history only below the newer one's
    start (and up to its time): past it, a segment the newer generation has
    not archived is a gap, however much the older copy holds."""
    newest: dict[int, tuple[int, WalObject]] = {}  # segment number -> (link index, copy)
    names = {name for link in chain for name in link.objects}
    for name in names:
        seg = segment(name)
        owned = owner(chain, name) if seg is not None and seg.end > from_lsn else None
        if seg is not None and owned is not None and (
                seg.number not in newest or owned[0] < newest[seg.number][0]):
            newest[seg.number] = owned
    number = from_lsn // SEGMENT_SIZE
    end_lsn, end_time = from_lsn, 0.0
    while number in newest:
        index, obj = newest[number]
        end_lsn, end_time = (number + 1) * SEGMENT_SIZE, max(end_time, obj.mtime)
        newer = min((link.generation for link in chain[:index]), default=None,
                    key=lambda g: g.start_lsn)
        if newer is not None and newer.start_lsn < end_lsn:
            return Window(newer.start_lsn, min(end_time, newer.start_time or end_time))
        number += 1
    return Window(end_lsn, end_time)


STAGING_WORKERS = 2  # a segment decompressed and written while the one before is


class Stager:
    """Decompresses the chosen files into a directory next to pg_wal, in order,
    while recovery runs; the restore program waits for a `.pending` file and
    reports any other name as not found. Run `run` in a worker thread."""

    def __init__(self, directory: Path, objects: Iterable[WalObject], uid: int, gid: int) -> None:
        self.directory = directory
        self.objects = list(objects)
        self.uid, self.gid = uid, gid
        self.cancelled = threading.Event()
        self.staged = 0
        self.staged_bytes = 0
        self.seconds = 0.0  # spent staging
        self.error: BaseException | None = None

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chown(self.directory, self.uid, self.gid)
        os.chmod(self.directory, 0o700)
        for obj in self.objects:
            (self.directory / f"{obj.name}.pending").touch()

    def run(self, workers: int = STAGING_WORKERS) -> None:
        """Stages every file, `workers` at a time in LSN order (zstd and the writes
        release the GIL); stops early when cancelled or on the first error."""
        began = time.monotonic()
        queue = iter(self.objects)
        lock = threading.Lock()

        def work() -> None:
            while not self.cancelled.is_set() and self.error is None:
                with lock:
                    obj = next(queue, None)
                if obj is None:
                    return
                try:
                    size = self._stage(obj)
                except BaseException as exc:
                    with lock:
                        self.error = self.error or exc
                    (self.directory / ".failed").touch()
                    return
                with lock:
                    self.staged += 1
                    self.staged_bytes += size

        helpers = [threading.Thread(target=work, daemon=True) for _ in range(workers - 1)]
        for t in helpers:
            t.start()
        work()
        for t in helpers:
            t.join()
        self.seconds = time.monotonic() - began

    def _stage(self, obj: WalObject) -> int:
        tmp = self.directory / f".{obj.name}.tmp"
        data = WalRepository.read(obj.path)
        write_sparse(tmp, data)
        os.chown(tmp, self.uid, self.gid)
        os.rename(tmp, self.directory / obj.name)
        (self.directory / f"{obj.name}.pending").unlink(missing_ok=True)
        return len(data)


def write_sparse(path: Path, data: bytes) -> None:
    """Writes `data` with its trailing zeros left as a hole. A segment ended by a
    forced switch (archive_timeout) is mostly zeros: at one switch every 2 s a
    point-in-time replay would otherwise write 16 MiB per 2 s of history, and
    recovery never reads past the switch record."""
    used = len(data.rstrip(b"\0"))
    with open(path, "wb") as f:
        f.write(memoryview(data)[:used])
        f.truncate(len(data))
