"""The event journal on its own (a directory stands in for the pool's dataset):
cursors across reopenings, torn lines, trimming, cursor errors, live watching;
and the webhook signature receivers check."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from cygnet.agent import eventlog
from cygnet.agent.eventlog import CursorGone, EventJournal
from cygnet.agent.events import Draft, Event, EventKind
from cygnet.agent.webhooks import read_secret, shown_url, signature, verify
from cygnet.errors import InvalidArgument, Unavailable


def draft(n: int) -> Draft:
    return Draft(time.time(), EventKind.CREATED, f"db{n:010d}", "", "shop", "", f"n={n}")


async def journal_with(path: Path, count: int, **bounds: float) -> EventJournal:
    journal = EventJournal(path, **bounds)  # type: ignore[arg-type]
    journal.open()
    journal.bind(asyncio.get_running_loop())
    for n in range(count):
        journal.add(draft(n))
    await journal.flush()
    return journal


async def collect(journal: EventJournal, after: int, **kw: bool) -> list[Event]:
    return [e async for e in journal.watch(after, **kw)]


def test_cursors_carry_on_after_reopening_and_a_torn_line(tmp_path: Path) -> None:
    async def run() -> None:
        first = await journal_with(tmp_path, 3)
        assert first.durable == 3
        newest = sorted(tmp_path.glob("*.jsonl"))[-1]
        with newest.open("ab") as f:
            f.write(b'{"cursor":4,"ti')  # a crash mid-write
        second = await journal_with(tmp_path, 2)
        events = await collect(second, 0, from_oldest=True, follow=False)
        assert [e.cursor for e in events] == [1, 2, 3, 4, 5]
        assert events[3].reason == "n=0"  # the torn event is gone, its cursor reused
        lines = newest.read_bytes().splitlines()
        assert [json.loads(line)["cursor"] for line in lines] == [1, 2, 3, 4, 5]

    asyncio.run(run())


def test_trimmed_by_count_and_cursor_errors(tmp_path: Path) -> None:
    async def run() -> None:
        journal = await journal_with(tmp_path, 10, max_events=4)
        assert journal.oldest == 7
        assert [e.cursor for e in await collect(journal, 6, follow=False)] == [7, 8, 9, 10]
        with pytest.raises(CursorGone, match="oldest cursor kept is 7") as info:
            await collect(journal, 5, follow=False)
        assert info.value.oldest == 7
        with pytest.raises(CursorGone, match="newer than this host's newest event"):
            await collect(journal, 11, follow=False)
        assert await collect(journal, 0, follow=False) == []  # only new ones: none yet

    asyncio.run(run())


def test_trimmed_by_age(tmp_path: Path) -> None:
    async def run() -> None:
        journal = await journal_with(tmp_path, 30, max_events=100, max_age=3600)
        segments = sorted(tmp_path.glob("*.jsonl"))
        assert len(segments) == 3  # ten events each
        old = time.time() - 7200
        os.utime(segments[0], (old, old))
        journal.add(draft(99))
        await journal.flush()
        assert journal.oldest == 11 and not segments[0].exists()

    asyncio.run(run())


def test_watch_replays_then_follows_and_a_slow_watcher_rereads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventlog, "QUEUE_LIMIT", 2)

    async def run() -> None:
        journal = await journal_with(tmp_path, 2)
        stream = journal.watch(1, follow=True)
        assert (await anext(stream)).cursor == 2  # replayed
        for n in range(5):  # more than the watcher's queue holds
            journal.add(draft(n))
        await journal.flush()
        got = [(await anext(stream)).cursor for _ in range(5)]
        assert got == [3, 4, 5, 6, 7]
        await stream.aclose()

    asyncio.run(run())


def test_webhook_signature() -> None:
    secret, body = b"0123456789abcdef", b'{"cursor":1}'
    header = signature(secret, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header) == 16 + 64
    assert verify(secret, header, body)
    assert not verify(secret, header, body + b" ")
    assert not verify(b"fedcba9876543210", header, body)
    assert not verify(secret, header.replace("t=1700000000", "t=1700000001"), body)


def test_webhook_settings_name_their_field(tmp_path: Path) -> None:
    assert shown_url("https://u:pw@hooks.example:8443/x?token=s#f") == \
        "https://hooks.example:8443/x"
    with pytest.raises(InvalidArgument, match=r"^webhook_secret_file: is needed"):
        read_secret(None)
    short = tmp_path / "short"
    short.write_text("tiny\n")
    with pytest.raises(InvalidArgument, match="at least 16 bytes"):
        read_secret(short)
    with pytest.raises(InvalidArgument, match="cannot be read"):
        read_secret(tmp_path / "missing")


def test_a_stopping_daemon_ends_live_streams_with_the_cursor_to_resume_after(
        tmp_path: Path) -> None:
    async def run() -> None:
        journal = await journal_with(tmp_path, 3)
        stream = journal.watch(2, follow=True)
        assert (await anext(stream)).cursor == 3
        stop = asyncio.Event()
        writer = asyncio.create_task(journal.run(stop))
        stop.set()
        await writer
        with pytest.raises(Unavailable, match="resume after cursor 3"):
            await anext(stream)

    asyncio.run(run())


def test_a_replay_is_a_prefix_of_what_was_written_when_it_began(tmp_path: Path) -> None:
    async def run() -> None:
        journal = await journal_with(tmp_path, 3)
        journal.durable = 2  # event 3 is on disk, its batch not yet acknowledged
        assert [e.cursor for e in journal.read_after(0)] == [1, 2]

    asyncio.run(run())
