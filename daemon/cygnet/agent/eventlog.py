"""The event journal: append-only JSON lines on the pool, so cursors outlive the daemon.

It lives in its own dataset, POOL/cygnet/events of the first configured pool
(`cygnet:kind=events`), never in STATE_DIR: a host rebuilt around its pools
keeps its history and its cursors. Files are segments named by their first
cursor (`00000000000000000042.jsonl`), one event per line. A segment holds
`segment_events` events; whole segments are trimmed, oldest first, when the
journal keeps more than `max_events` or a segment's newest event (its mtime) is
older than `max_age` seconds.

Crash safety: events are written and fsynced in batches by one writer task,
and only then shown to watchers and webhooks, so a cursor anyone has seen is
never reused. A torn last line (a crash mid-write) is cut off at open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cygnet.agent import layout as L
from cygnet.agent.events import Draft, Event
from cygnet.errors import OutOfRange, Unavailable

if TYPE_CHECKING:  # the host imports flows that emit events
    from cygnet.agent.host import Host

log = logging.getLogger("cygnet.events")

SUFFIX = ".jsonl"
QUEUE_LIMIT = 10_000  # a watcher further behind than this re-reads the files


class CursorGone(OutOfRange):
    """The cursor is older than the oldest event kept, or newer than the newest."""

    def __init__(self, message: str, oldest: int) -> None:
        super().__init__(message)
        self.oldest = oldest


class _Watcher:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()  # None: the daemon stops
        self.behind = False  # lost live events: re-read from the files


class EventJournal:
    def __init__(self, directory: Path, *, max_events: int = 100_000,
                 max_age: float = 30 * 86400.0) -> None:
        self.directory = directory
        self.max_events = max(1, max_events)
        self.max_age = max_age
        self.segment_events = max(1, self.max_events // 10)
        self.segments: list[int] = []  # first cursors, oldest first
        self.next_cursor = 1
        self.durable = 0  # the newest cursor written and fsynced
        self.current_count = 0
        self._pending: list[Event] = []
        self._wake = asyncio.Event()
        self._watchers: set[_Watcher] = set()
        self.listeners: list[Callable[[Event], None]] = []  # webhooks, per durable event
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- opening ------------------------------------------------------------------

    def open(self) -> None:
        """Reads the segments' names and the newest one's last cursor; repairs a torn line."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segments = sorted(int(p.stem) for p in self.directory.glob(f"*{SUFFIX}")
                               if p.stem.isdigit())
        if self.segments:
            last = self._repair(self._path(self.segments[-1]))
            self.current_count = len(last)
            self.durable = last[-1].cursor if last else self.segments[-1] - 1
        self.next_cursor = self.durable + 1

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the writer runs on; events from other threads are handed to it."""
        self._loop = loop

    def _path(self, first: int) -> Path:
        return self.directory / f"{first:020d}{SUFFIX}"

    def _repair(self, path: Path) -> list[Event]:
        data = path.read_bytes()
        good = data[:data.rfind(b"\n") + 1]
        events = []
        for line in good.splitlines():
            try:
                events.append(Event.from_json(json.loads(line)))
            except (ValueError, KeyError):
                log.error("event journal %s: a line that does not parse, skipped", path.name)
        if len(good) != len(data):
            log.warning("event journal %s: cut a torn last line (%d bytes)", path.name,
                        len(data) - len(good))
            with path.open("r+b") as f:
                f.truncate(len(good))
                os.fsync(f.fileno())
        return events

    @property
    def oldest(self) -> int:
        """The oldest cursor kept (the next one when the journal is empty)."""
        return self.segments[0] if self.segments else self.next_cursor

    # --- writing ------------------------------------------------------------------

    def add(self, draft: Draft) -> None:
        """The events sink: gives the event its cursor and queues it for the writer."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:  # from a worker thread
            loop.call_soon_threadsafe(self.add, draft)
            return
        event = Event(self.next_cursor, draft.time, draft.kind, draft.database_id,
                      draft.branch_id, draft.database, draft.branch, draft.reason)
        self.next_cursor += 1
        self._pending.append(event)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """The writer: batches, fsyncs, then publishes. Ends after a last flush."""
        while not stop.is_set():
            waiter = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({waiter, woken}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            woken.cancel()
            await self.flush()
        await self.flush()
        for watcher in self._watchers:  # so that the server's stop need not wait for them
            watcher.queue.put_nowait(None)

    async def flush(self) -> None:
        self._wake.clear()
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await asyncio.to_thread(self._write, batch)
        except OSError as exc:
            # A full pool: the events still reach live watchers, but not the files.
            log.error("event journal: %d event(s) not written: %s", len(batch), exc)
        self.durable = batch[-1].cursor
        for event in batch:
            self._publish(event)

    def _write(self, batch: list[Event]) -> None:
        while batch:
            if not self.segments or self.current_count >= self.segment_events:
                self.segments.append(batch[0].cursor)
                self.current_count = 0
            room = self.segment_events - self.current_count
            chunk, batch = batch[:room], batch[room:]
            data = b"".join(json.dumps(e.to_json(), separators=(",", ":")).encode() + b"\n"
                            for e in chunk)
            fd = os.open(self._path(self.segments[-1]),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.current_count += len(chunk)
        self._trim()

    def _trim(self) -> None:
        """Drops whole segments, oldest first, past the count or the age; never the newest."""
        now = time.time()
        while len(self.segments) > 1:
            first, second = self.segments[0], self.segments[1]
            path = self._path(first)
            too_many = (self.next_cursor - second) >= self.max_events
            try:
                too_old = now - path.stat().st_mtime > self.max_age
            except FileNotFoundError:
                too_old = True
            if not (too_many or too_old):
                return
            path.unlink(missing_ok=True)
            self.segments.pop(0)
            log.info("event journal: trimmed events %d-%d", first, second - 1)

    def _publish(self, event: Event) -> None:
        for watcher in self._watchers:
            if watcher.queue.qsize() >= QUEUE_LIMIT:
                watcher.behind = True
            elif not watcher.behind:
                watcher.queue.put_nowait(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed")

    # --- reading ------------------------------------------------------------------

    def check_cursor(self, after: int) -> None:
        if after and after < self.oldest - 1:
            raise CursorGone(f"cursor {after} is gone: events before {self.oldest} were "
                             f"trimmed; the oldest cursor kept is {self.oldest}", self.oldest)
        if after > self.durable:
            raise CursorGone(f"cursor {after} is newer than this host's newest event "
                             f"({self.durable}): it is from another host or journal",
                             self.oldest)

    def read_after(self, after: int) -> list[Event]:
        """The events kept after `after`, read from the files: a prefix without gaps, as
        events written meanwhile (past `durable` when the read began) are left out."""
        out: list[Event] = []
        limit = self.durable
        segments = list(self.segments)
        for i, first in enumerate(segments):
            following = segments[i + 1] if i + 1 < len(segments) else None
            if following is not None and following <= after + 1:
                continue  # wholly at or before the cursor
            try:
                lines = self._path(first).read_bytes().splitlines()
            except FileNotFoundError:
                continue  # trimmed meanwhile
            for line in lines:
                try:
                    event = Event.from_json(json.loads(line))
                except (ValueError, KeyError):
                    continue
                if after < event.cursor <= limit:
                    out.append(event)
        return out

    async def watch(self, after: int, *, from_oldest: bool = False, follow: bool = True
                    ) -> AsyncGenerator[Event, None]:
        """Events after `after` (0: from the oldest, or only new ones), then live ones."""
        if after == 0:
            after = self.oldest - 1 if from_oldest else self.durable
        self.check_cursor(after)
        watcher = _Watcher()
        self._watchers.add(watcher)  # before reading, so nothing falls in between
        try:
            last = after
            replay = True
            while True:
                if replay:
                    replay = False
                    self.check_cursor(last)
                    found = await asyncio.to_thread(self.read_after, last)
                    self.check_cursor(last)  # trimmed while being read: say so, skip nothing
                    for event in found:
                        yield event
                        last = event.cursor
                    if not follow:
                        return
                live = await watcher.queue.get()
                if live is None:
                    raise Unavailable(f"cygnetd is stopping: resume after cursor {last}")
                if watcher.behind:
                    watcher.behind = False
                    watcher.queue = asyncio.Queue()
                    replay = True
                    continue
                if live.cursor > last:
                    yield live
                    last = live.cursor
        finally:
            self._watchers.discard(watcher)


def dataset(pool: str) -> str:
    return f"{L.root(pool)}/events"


async def open_on_pool(host: Host) -> EventJournal:
    """The journal in POOL/cygnet/events of the first pool, made at first start."""
    config = host.config
    name = dataset(config.pools[0])
    if not await host.zfs.exists(name):
        await host.zfs.create(name, {L.P_KIND: "events"})
    journal = EventJournal(L.mountpoint(config.mount_root, name), max_events=config.events_max,
                           max_age=config.events_max_age_days * 86400)
    await asyncio.to_thread(journal.open)
    journal.bind(asyncio.get_running_loop())
    log.info("event journal on %s: cursors %d-%d", name, journal.oldest, journal.durable)
    global _current
    _current = journal
    return journal


_current: EventJournal | None = None


def current() -> EventJournal | None:
    """The daemon's journal, once open (WatchEvents reads it)."""
    return _current
