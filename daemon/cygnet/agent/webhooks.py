"""Webhooks: each event POSTed as JSON to the configured URLs, signed, retried.

Receivers verify `Cygnet-Signature: t=UNIX,v1=HEX`, where HEX is
HMAC-SHA256(secret, f"{UNIX}." + body) in lowercase hex, and should refuse a
timestamp far from their clock (replays). Each URL gets its events in cursor
order from its own task: a failing delivery is retried with exponential backoff
(1 s doubling to 60 s, `attempts` tries), then dropped with a log line, and the
next event goes. Nothing here blocks the daemon: the journal only appends to a
bounded queue. Each URL's last delivered cursor is kept beside the journal
(`webhook-HASH.cursor`), so a restarted daemon sends what it had not sent yet:
delivery is at least once, and `Cygnet-Event-Cursor` lets receivers drop repeats.

The secret is read from a file and never logged; URLs are
logged without their query string or credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from cygnet.agent.eventlog import EventJournal
from cygnet.agent.events import Event
from cygnet.errors import InvalidArgument

log = logging.getLogger("cygnet.webhooks")

SIGNATURE_HEADER = "Cygnet-Signature"
CURSOR_HEADER = "Cygnet-Event-Cursor"
QUEUE_LIMIT = 10_000
# Straight to the receiver: no proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The Cygnet-Signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, body: bytes) -> bool:
    """What a receiver does (and the tests): recompute and compare in constant time."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if not parts.get("t", "").isdigit():
        return False
    return hmac.compare_digest(signature(secret, int(parts["t"]), body), header)


def shown_url(url: str) -> str:
    """A URL fit for logs: no credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def read_secret(path: Path | None) -> bytes:
    if path is None:
        raise InvalidArgument("webhook_secret_file", "is needed when webhook_urls are set")
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise InvalidArgument("webhook_secret_file", f"cannot be read: {exc.strerror}") from None
    if len(secret) < 16:
        raise InvalidArgument("webhook_secret_file", "must hold at least 16 bytes")
    return secret


def check_urls(urls: tuple[str, ...]) -> None:
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument("webhook_urls", f"{shown_url(url)!r} is not an http(s) URL")


class Webhook:
    """One URL's queue and delivery task."""

    def __init__(self, url: str, secret: bytes, *, attempts: int = 8, first_delay: float = 1.0,
                 max_delay: float = 60.0, timeout: float = 10.0) -> None:
        self.url = url
        self.cursor_file: Path | None = None  # where the last delivered cursor is kept
        self._secret = secret
        self.attempts = attempts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.queue: deque[Event] = deque(maxlen=QUEUE_LIMIT)  # the oldest go first when full
        self._ready = asyncio.Event()
        self.delivered = 0
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(event)
        self._ready.set()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self.queue:
                event = self.queue.popleft()
                await self._deliver(event)
                self._done(event.cursor)

    def _done(self, cursor: int) -> None:
        if self.cursor_file is None:
            return
        tmp = self.cursor_file.with_suffix(".tmp")
        try:
            tmp.write_text(str(cursor))
            tmp.replace(self.cursor_file)
        except OSError as exc:
            log.error("webhook %s: cursor not kept: %s", shown_url(self.url), exc.strerror)

    def resume(self, journal: EventJournal) -> None:
        """Queues what a previous run had not delivered; a new URL starts with new events."""
        name = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.cursor_file = journal.directory / f"webhook-{name}.cursor"
        try:
            after = int(self.cursor_file.read_text().strip() or 0)
        except (OSError, ValueError):
            self._done(journal.durable)
            return
        after = max(after, journal.oldest - 1)
        for event in journal.read_after(after):
            self.offer(event)

    async def _deliver(self, event: Event) -> None:
        body = json.dumps(event.to_json(), separators=(",", ":")).encode()
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            try:
                status = await asyncio.to_thread(self._post, body, event.cursor)
                if 200 <= status < 300:
                    self.delivered += 1
                    return
                why = f"HTTP {status}"
            except (OSError, ValueError) as exc:
                why = type(exc).__name__ if not str(exc) else str(exc)[:200]
            if attempt < self.attempts:
                log.warning("webhook %s: event %d, attempt %d failed (%s); retrying in %g s",
                            shown_url(self.url), event.cursor, attempt, why, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
            else:
                log.error("webhook %s: event %d dropped after %d attempts (%s)",
                          shown_url(self.url), event.cursor, attempt, why)
                self.dropped += 1

    def _post(self, body: bytes, cursor: int) -> int:
        headers = {"Content-Type": "application/json", "User-Agent": "cygnetd",
                   CURSOR_HEADER: str(cursor),
                   SIGNATURE_HEADER: signature(self._secret, int(time.time()), body)}
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


class Webhooks:
    """Every configured URL; `offer` is the journal's listener."""

    def __init__(self, urls: tuple[str, ...], secret_file: Path | None, **options: float) -> None:
        check_urls(urls)
        secret = read_secret(secret_file) if urls else b""
        self.hooks = [Webhook(url, secret, **options) for url in urls]  # type: ignore[arg-type]

    def offer(self, event: Event) -> None:
        for hook in self.hooks:
            hook.offer(event)

    def resume(self, journal: EventJournal) -> None:
        for hook in self.hooks:
            with contextlib.suppress(OSError):
                hook.resume(journal)

    async def run(self) -> None:
        if self.hooks:
            await asyncio.gather(*(hook.run() for hook in self.hooks))
