"""Runs one external command: argv list, timeout, captured output, optionally as postgres."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cygnet.errors import Unavailable
from cygnet.postgres.layout import postgres_user

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    """Exit status and decoded output of a finished command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def postgres_env() -> dict[str, str]:
    """A minimal environment for Postgres tools: nothing of the daemon's leaks through."""
    return {"PATH": "/usr/bin:/bin", "HOME": postgres_user().home, "LANG": "C.UTF-8"}


async def run(
    argv: list[str], *, timeout: float, as_postgres: bool = False, cwd: Path = Path("/")
) -> CommandResult:
    """Runs `argv` to completion; kills it and raises Unavailable after `timeout` seconds."""
    kwargs: dict[str, object] = {}
    if as_postgres:
        user = postgres_user()
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": [], "env": postgres_env()}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        **kwargs,  # type: ignore[arg-type]
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise Unavailable(f"{argv[0]} did not finish within {timeout:.0f}s") from None
    result = CommandResult(
        argv=tuple(argv),
        returncode=proc.returncode or 0,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
    )
    log.debug("ran %s: rc=%d in %.3fs", argv, result.returncode, time.monotonic() - started)
    return result
