"""Identifying a postmaster through /proc, robust against pid reuse (as Patroni does)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cygnet.postgres.pidfile import read_pidfile

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat we use."""

    pid: int
    state: str
    ppid: int
    start_ticks: int  # field 22: start time in clock ticks since boot


def read_stat(pid: int) -> ProcStat | None:
    """Parses /proc/PID/stat; None if there is no such process."""
    try:
        with open(f"{PROC}/{pid}/stat", encoding="utf-8", errors="replace") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    return ProcStat(pid=pid, state=rest[0], ppid=int(rest[1]), start_ticks=int(rest[19]))


def _running(stat: ProcStat | None) -> bool:
    return stat is not None and stat.state not in ("Z", "X", "x")


@dataclass(frozen=True)
class Postmaster:
    """A live postmaster, pinned by pid AND start time so a reused pid is never mistaken."""

    pid: int
    start_ticks: int
    pgdata: Path

    def is_alive(self) -> bool:
        """True while the same process (same start time) exists and is not a zombie."""
        stat = read_stat(self.pid)
        return _running(stat) and stat is not None and stat.start_ticks == self.start_ticks


def _is_postgres_binary(pid: int) -> bool:
    try:
        exe = os.readlink(f"{PROC}/{pid}/exe")
    except OSError:
        return False
    # After a package upgrade the link reads ".../postgres (deleted)".
    return os.path.basename(exe).split(" ")[0] in ("postgres", "postmaster")


def _cwd_is(pid: int, pgdata: Path) -> bool:
    try:
        cwd = os.readlink(PROC / str(pid) / "cwd")
    except OSError:
        return False
    return os.path.realpath(cwd) == os.path.realpath(pgdata)


def postmaster_by_pid(pid: int, pgdata: Path) -> Postmaster | None:
    """A Postmaster if `pid` is a running postgres binary whose cwd is `pgdata`, else None.

    The postmaster chdirs into its data directory at startup, so the cwd check
    ties the pid to this cluster even if the pid file is stale.
    """
    stat = read_stat(pid)
    if stat is None or not _running(stat):
        return None
    if not _is_postgres_binary(pid) or not _cwd_is(pid, pgdata):
        return None
    return Postmaster(pid=pid, start_ticks=stat.start_ticks, pgdata=pgdata)


def find_live_postmaster(pgdata: Path) -> Postmaster | None:
    """The postmaster that runs on `pgdata`, for adoption after a daemon restart.

    Requires postmaster.pid, a live non-zombie process with its pid, a postgres
    binary, and /proc/PID/cwd == pgdata. Any stale or reused pid yields None.
    """
    pidfile = read_pidfile(pgdata)
    if pidfile is None:
        return None
    return postmaster_by_pid(pidfile.pid, pgdata)


def is_dead(pid: int) -> bool:
    """True when `pid` runs nothing that could hold a Postgres lock: no process, a
    zombie (a killed postmaster waits there until PID 1 reaps it, yet Postgres's
    own `kill(pid, 0)` check sees it as alive), or a reused pid that is not postgres."""
    return not _running(read_stat(pid)) or not _is_postgres_binary(pid)


def processes_in(pgdata: Path) -> list[int]:
    """Live postgres processes whose working directory is `pgdata`: a postmaster and
    its children all run there, so after a crash this finds the stragglers. One
    readlink per process filters; only matches get the full check."""
    target = os.path.realpath(pgdata)
    found = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"{entry.path}/cwd")
        except OSError:
            continue
        if cwd == target and postmaster_by_pid(int(entry.name), pgdata) is not None:
            found.append(int(entry.name))
    return found


def postmasters(under: str = "/") -> dict[str, Postmaster]:
    """Every live postmaster on the host whose data directory (its cwd, as the
    kernel names it) is below `under`, by that directory: one pass over /proc, for
    a view of many branches at once, where a pid file read per branch would cost a
    filesystem round trip each. Plain string paths: a listing at 1,000 branches
    makes one of these, over some 400 processes."""
    prefix = under if under.endswith("/") else under + "/"
    groups: dict[str, list[int]] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"{PROC}/{entry.name}/cwd")
        except OSError:
            continue
        if cwd.startswith(prefix) and _is_postgres_binary(int(entry.name)):
            groups.setdefault(cwd, []).append(int(entry.name))
    found: dict[str, Postmaster] = {}
    for cwd, pids in groups.items():
        for pid in pids:
            stat = read_stat(pid)
            # The postmaster is the one whose parent is not in its own group.
            if _running(stat) and stat is not None and stat.ppid not in pids:
                found[cwd] = Postmaster(pid=pid, start_ticks=stat.start_ticks, pgdata=Path(cwd))
                break
    return found
