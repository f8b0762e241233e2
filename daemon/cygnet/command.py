"""The one runner of external commands (`zfs`, `zpool`, initdb and friends).

Argv lists only (never a shell), a deadline on every call, output captured,
a log line when a command starts and one when it ends (with its duration),
and a Prometheus histogram per tool and verb (metrics/commands.py).

A command is killed (SIGKILL) when its deadline passes and also when the
awaiting task is cancelled, so no command outlives the request that wanted it.
Killing the client does not undo what it asked for, though: a killed `zfs`
has already handed its request to the kernel module or to zfs-fuse, which
carries on. Its outcome is unknown, and callers that care re-read the state
(see zfs/settle.py) rather than assume either outcome.

Secrets never reach the log: values of password options, passwords in
connection URIs and `password=` in conninfo strings are masked, and the
environment is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cygnet.metrics.commands import observe

log = logging.getLogger("cygnet.command")

SETPRIV = "/usr/bin/setpriv"  # util-linux

_SECRET_OPTION = re.compile(r"^(--?[\w-]*(?:password|passwd|secret|token)[\w-]*=)(.+)$", re.I)
_CONNINFO_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
_URI_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")


@dataclass(frozen=True)
class CommandResult:
    """Exit status, decoded output and duration of a finished command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class CommandTimedOut(Exception):
    """The command passed its deadline and was killed; what it did is unknown."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(f"{Path(argv[0]).name} did not finish within {timeout:.0f}s")
        self.argv = list(argv)
        self.timeout = timeout


@dataclass(frozen=True)
class RunAs:
    """Credentials and environment for a child that must not run as root."""

    uid: int
    gid: int
    env: Mapping[str, str]


async def run(argv: Sequence[str | os.PathLike[str]], *, timeout: float, verb: str = "",
              run_as: RunAs | None = None, cwd: Path | None = None) -> CommandResult:
    """Runs `argv` to completion and returns its result, whatever its exit status.

    Raises CommandTimedOut after `timeout` seconds; on cancellation the child
    is killed and the CancelledError goes on. `verb` labels the histogram
    (default: the tool's name).
    """
    args = [os.fspath(a) for a in argv]
    tool = Path(args[0]).name
    verb = verb or tool
    shown = shown_argv(args)
    kwargs: dict[str, object] = {}
    spawned = args
    if run_as is not None:
        # setpriv drops to the user in its own process: Python's user=/group= switch
        # makes it fork() instead of vfork(), which runs gRPC's fork handlers
        # in the child, and they crash it.
        spawned = [SETPRIV, f"--reuid={run_as.uid}", f"--regid={run_as.gid}", "--clear-groups",
                   "--", *args]
        kwargs = {"env": dict(run_as.env)}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *spawned, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=cwd, **kwargs)  # type: ignore[arg-type]
    log.debug("start [%d] %s", proc.pid, shown)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        await _kill(proc)
        _finished(tool, verb, started)
        log.error("killed [%d] after its %.1fs deadline, outcome unknown: %s",
                  proc.pid, timeout, shown)
        raise CommandTimedOut(args, timeout) from None
    except asyncio.CancelledError:
        await _kill(proc)
        seconds = _finished(tool, verb, started)
        log.warning("killed [%d] on cancellation after %.1f ms, outcome unknown: %s",
                    proc.pid, seconds * 1000, shown)
        raise
    seconds = _finished(tool, verb, started)
    code = proc.returncode if proc.returncode is not None else -1
    log.log(logging.DEBUG if code == 0 else logging.INFO, "end [%d] exit %d in %.1f ms: %s",
            proc.pid, code, seconds * 1000, shown)
    return CommandResult(tuple(args), code, out.decode("utf-8", "replace"),
                         err.decode("utf-8", "replace"), seconds)


def shown_argv(argv: Sequence[str]) -> str:
    """The command line as the log shows it: secrets masked."""
    return " ".join(_mask(arg) for arg in argv)


def _mask(arg: str) -> str:
    arg = _SECRET_OPTION.sub(r"\1***", arg)
    arg = _URI_PASSWORD.sub(r"\1***@", arg)
    return _CONNINFO_PASSWORD.sub(r"\1***", arg)


def _finished(tool: str, verb: str, started: float) -> float:
    seconds = time.monotonic() - started
    observe(tool, verb, seconds)
    return seconds


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL and reap, even if the awaiting task is cancelled again meanwhile."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(proc.wait())
