"""The shared command runner: deadlines, cancellation, logs without secrets, the histogram."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from cygnet import command
from cygnet.metrics import REGISTRY
from cygnet.zfs.runner import CommandRunner


def _count(tool: str, verb: str) -> float:
    value = REGISTRY.get_sample_value("cygnet_command_duration_seconds_count",
                                      {"tool": tool, "verb": verb})
    return value or 0.0


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _sleeper(pidfile: Path) -> list[str]:
    return ["sh", "-c", f'echo $$ > {pidfile}; exec sleep 30']


async def _pid_of(pidfile: Path) -> int:
    for _ in range(500):
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        await asyncio.sleep(0.01)
    raise AssertionError("the child never started")


def test_cancellation_kills_the_child(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pidfile = tmp_path / "pid"

    async def go() -> int:
        task = asyncio.create_task(command.run(_sleeper(pidfile), timeout=60))
        pid = await _pid_of(pidfile)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    with caplog.at_level(logging.WARNING, "cygnet.command"):
        pid = asyncio.run(go())
    assert _gone(pid)
    assert "killed" in caplog.text and "on cancellation" in caplog.text
    assert "outcome unknown" in caplog.text


def test_a_deadline_kills_the_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    before = _count("sh", "sh")

    async def go() -> int:
        task = asyncio.create_task(command.run(_sleeper(pidfile), timeout=1))
        pid = await _pid_of(pidfile)
        with pytest.raises(command.CommandTimedOut, match="sh did not finish within 1s"):
            await task
        return pid

    assert _gone(asyncio.run(go()))
    assert _count("sh", "sh") == before + 1  # killed commands are timed too


def test_start_and_end_are_logged_with_duration_and_no_secret(
        caplog: pytest.LogCaptureFixture) -> None:
    argv = ["echo", "postgresql://app:s3cret1@db1/app", "--password=s3cret2",
            "host=db1 password='s3 cret3' user=app", "-o", "cygnet:name=ok"]
    with caplog.at_level(logging.DEBUG, "cygnet.command"):
        result = asyncio.run(command.run(argv, timeout=10))
    assert result.returncode == 0 and "s3cret2" in result.stdout  # the child got them all
    starts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("start [")]
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("end [")]
    assert len(starts) == 1 and len(ends) == 1
    assert " exit 0 in " in ends[0] and " ms: echo " in ends[0]
    assert "cygnet:name=ok" in ends[0] and "postgresql://app:***@db1/app" in ends[0]
    for secret in ("s3cret1", "s3cret2", "s3 cret3", "cret3"):
        assert secret not in caplog.text


def test_the_histogram_has_a_verb_per_zfs_call() -> None:
    before = _count("zfs", "list")
    result = asyncio.run(CommandRunner().run(["zfs", "list", "-H", "-o", "name", "-d", "0"],
                                             check=False))
    assert result.argv[:2] == ("zfs", "list")
    assert _count("zfs", "list") == before + 1
    before = _count("true", "true")
    asyncio.run(CommandRunner().run(["true", "anything"]))
    assert _count("true", "true") == before + 1 and _count("true", "anything") == 0
