"""systemd integration: readiness, status lines, watchdog pings and journald logging.

Every call is a no-op outside systemd (no NOTIFY_SOCKET, stderr not a journal
stream), so the daemons behave the same when started by hand, by a test or by
the fallback supervisor of the Ansible role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from systemd import daemon, journal  # type: ignore[import-untyped]

log = logging.getLogger("cygnet.systemd")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def notify(*lines: str) -> bool:
    """Sends `lines` (e.g. "READY=1") to the service manager; False when there is none."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    try:
        return bool(daemon.notify("\n".join(lines)))
    except OSError as exc:  # a vanished socket must never take the daemon down
        log.debug("sd_notify failed: %s", exc)
        return False


def ready(status: str) -> bool:
    """Only call once the daemon answers requests: systemd starts dependants on READY=1."""
    return notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def stopping(text: str = "stopping") -> bool:
    return notify("STOPPING=1", f"STATUS={text}")


def watchdog_interval() -> float | None:
    """Seconds between pings: half of WatchdogSec (sd_watchdog_enabled's rule), or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were forked or exec'd by it)
    return int(usec) / 1e6 / 2


async def watchdog(stop: asyncio.Event, interval: float | None = None) -> None:
    """Pings WATCHDOG=1 from the event loop until `stop`.

    The pings come from the loop that serves requests, so a wedged loop stops
    them and systemd restarts the daemon; Postgres outlives that restart.
    """
    interval = interval or watchdog_interval()
    if interval is None:
        return
    log.info("systemd watchdog: pinging every %.1fs", interval)
    while not stop.is_set():
        notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def journal_stream() -> bool:
    """True when stderr is connected to journald (systemd sets JOURNAL_STREAM=DEV:INODE)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, inode = value.partition(":")
    if not (dev.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(inode))


def setup_logging(level: str, identifier: str) -> None:
    """journald with structured fields under systemd, plain stderr lines otherwise."""
    handler: logging.Handler
    if journal_stream():
        handler = journal.JournalHandler(SYSLOG_IDENTIFIER=identifier)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
