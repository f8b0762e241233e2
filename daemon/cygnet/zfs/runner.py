"""One runner for every external command Cygnet's zfs layer starts.

Argv lists only (never a shell), a deadline on every call, stderr captured,
and one log line per call with its duration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cygnet.zfs.errors import ZfsTimeout, error_from

log = logging.getLogger("cygnet.zfs")

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class CommandRunner:
    """Runs commands with a deadline. `check=True` raises a typed ZfsError on failure."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout

    async def run(
        self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True
    ) -> CommandResult:
        args = [str(a) for a in argv]
        deadline = self.timeout if timeout is None else timeout
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), deadline)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.error("timeout after %.1fs: %s", deadline, " ".join(args))
            message = f"{args[0]} did not finish within {deadline:.0f}s"
            raise ZfsTimeout(message, argv=args) from None
        result = CommandResult(
            argv=args,
            returncode=proc.returncode if proc.returncode is not None else -1,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            seconds=time.monotonic() - started,
        )
        level = logging.DEBUG if result.returncode == 0 else logging.INFO
        log.log(level, "%s -> %d in %.1f ms", " ".join(args), result.returncode,
                result.seconds * 1000)
        if check and result.returncode != 0:
            raise error_from(args, result.returncode, result.stderr)
        return result
