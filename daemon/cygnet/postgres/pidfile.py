"""Parsing PGDATA/postmaster.pid (the postmaster's lock file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PIDFILE = "postmaster.pid"


@dataclass(frozen=True)
class PidFile:
    """The lines of postmaster.pid; later lines appear only as startup progresses.

    status is "starting", "stopping", "ready" or "standby" ("" before it is written).
    """

    pid: int
    data_dir: str
    start_epoch: int | None = None
    port: int | None = None
    socket_dir: str = ""
    listen_address: str = ""
    status: str = ""


def _int_or_none(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_pidfile(text: str) -> PidFile | None:
    """Parses the text of postmaster.pid; None if it is empty, partial or garbled."""
    lines = text.split("\n")
    if len(lines) < 2:
        return None
    pid = _int_or_none(lines[0])
    if pid is None or pid <= 0:
        return None
    field = [line.strip() for line in lines] + [""] * 8
    return PidFile(
        pid=pid,
        data_dir=field[1],
        start_epoch=_int_or_none(field[2]),
        port=_int_or_none(field[3]),
        socket_dir=field[4],
        listen_address=field[5],
        # Line 7 is the shared memory key; line 8 the status, blank-padded.
        status=field[7],
    )


def read_pidfile(pgdata: Path) -> PidFile | None:
    """Reads PGDATA/postmaster.pid; None if missing or unparsable (e.g. mid-write)."""
    try:
        text = (pgdata / PIDFILE).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    return parse_pidfile(text)


def lockfile_pid(path: Path) -> int | None:
    """The pid on the first line of a Postgres lock file (postmaster.pid or a
    socket's `.s.PGSQL.PORT.lock`); None if missing or unreadable."""
    try:
        first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return _int_or_none(first)
