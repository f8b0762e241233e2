"""Postmaster lifecycle: start detached, wait for readiness, stop by signal, adopt.

The postmaster is never the daemon's child: a double fork in C (native/spawn.c)
gives it its own session and the postgres user, and leaves PID 1 its parent.
So killing cygnetd (even with SIGKILL) leaves every database running, and the
reconciler adopts them with find_live_postmaster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from cygnet._native import spawn_detached
from cygnet.errors import Aborted, FailedPrecondition, InternalError, InvalidArgument
from cygnet.postgres import _fs, sql
from cygnet.postgres._cmd import postgres_env
from cygnet.postgres.config import ensure_socket_dirs, socket_dir_of
from cygnet.postgres.handoff import preload_env, socket_dirs
from cygnet.postgres.layout import postgres_user
from cygnet.postgres.pidfile import PIDFILE, PidFile, lockfile_pid, read_pidfile
from cygnet.postgres.procfs import (
    Postmaster,
    find_live_postmaster,
    is_dead,
    processes_in,
    read_stat,
)

__all__ = [
    "STOP_SIGNALS",
    "PidFile",
    "Postmaster",
    "find_live_postmaster",
    "read_pidfile",
    "start",
    "stop",
    "wait_ready",
]

log = logging.getLogger(__name__)

# Patroni's table: smart waits for clients, fast aborts them, immediate skips the checkpoint.
STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
POLL_INTERVAL = 0.003
# How long an immediate shutdown may take after the requested mode timed out.
IMMEDIATE_GRACE = 15.0
# How long a crashed postmaster's children may take to notice and exit.
STRAGGLER_WAIT = 5.0
# Server log lines that say the shutdown checkpoint cannot be written.
_CANNOT_WRITE = (b"No space left on device", b"Disk quota exceeded")
# Below this much room a shutdown checkpoint is not attempted for long.
FULL_BYTES = 8 * 2**20

def _launch(bindir: Path, pgdata: Path, log_path: Path) -> int:
    """Starts the detached postmaster (see native/spawn.c); returns its pid.

    A double fork in C: the postmaster gets its own session, runs as postgres
    with PID 1 as its parent, and writes to the log file, so it keeps nothing
    of the daemon's open and outlives any daemon restart. It preloads the
    handoff library (postgres/handoff.py), which takes clients from the endpoint.
    """
    user = postgres_user()
    argv = [str(bindir / "postgres"), "-D", str(pgdata)]
    env = [f"{key}={value}" for key, value in (postgres_env() | preload_env()).items()]
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        return spawn_detached(argv, env, user.uid, user.gid, fd, "/")
    except OSError as exc:
        raise InternalError(f"could not start the postmaster: {exc}") from exc
    finally:
        os.close(fd)


def _log_tail(log_path: Path) -> str:
    tail = _fs.tail_lines(log_path, 20)
    return f"; last log lines:\n{tail}" if tail else ""


async def wait_ready(postmaster: Postmaster, log_path: Path, timeout: float = 60.0) -> None:
    """Polls postmaster.pid every few ms until the postmaster reports "ready".

    Raises Aborted if it exits (with the log tail) or is not ready within
    `timeout` (it is then left running: crash recovery may just be slow).
    """
    deadline = time.monotonic() + timeout
    while True:
        pidfile = read_pidfile(postmaster.pgdata)
        if pidfile and pidfile.pid == postmaster.pid and pidfile.status == "ready":
            return
        if not postmaster.is_alive():
            raise Aborted(f"postmaster exited during startup{_log_tail(log_path)}")
        if time.monotonic() >= deadline:
            raise Aborted(
                f"postmaster {postmaster.pid} not ready after {timeout:.0f}s{_log_tail(log_path)}"
            )
        await asyncio.sleep(POLL_INTERVAL)


async def start(bindir: Path, pgdata: Path, log_path: Path, timeout: float = 60.0) -> Postmaster:
    """Starts a detached postmaster on `pgdata` and returns once it accepts connections.

    Refuses with FailedPrecondition if a live postmaster already runs on
    `pgdata` (use find_live_postmaster to adopt it). A stale postmaster.pid is
    removed first, since Postgres refuses to start if its pid was reused.
    Creates the socket dir named in cygnet.conf (lost on reboot with /run) and
    the log file. Output goes to `log_path`; errors carry its last lines.
    Callers serialize start/stop per pgdata (the agent holds a per-branch lock).
    """
    running = find_live_postmaster(pgdata)
    if running is not None:
        raise FailedPrecondition(f"a postmaster (pid {running.pid}) already runs on {pgdata}")
    await _clear_stale_pidfile(pgdata)
    socket_dir = socket_dir_of(pgdata)
    if socket_dir is not None:
        ensure_socket_dirs(socket_dir)
        for path in socket_dirs(socket_dir):
            _clear_stale_socket_locks(path)
    _fs.ensure_postgres_file(log_path)
    pid = _launch(bindir, pgdata, log_path)
    stat = read_stat(pid)
    if stat is None:
        raise Aborted(f"postmaster exited at once{_log_tail(log_path)}")
    postmaster = Postmaster(pid=pid, start_ticks=stat.start_ticks, pgdata=pgdata)
    await wait_ready(postmaster, log_path, timeout)
    return postmaster


async def _clear_stale_pidfile(pgdata: Path) -> None:
    """Removes a postmaster.pid nobody holds, once a crashed postmaster's children are gone.

    Postgres refuses a pid file whose pid still answers `kill(pid, 0)`, which a
    killed postmaster does as a zombie until PID 1 reaps it. Its children exit
    within moments of its death; starting beside them would share the data
    directory with processes of the old server, so they are waited for.
    """
    stale = lockfile_pid(pgdata / PIDFILE)
    if stale is None:
        _fs.remove_if_exists(pgdata / PIDFILE)  # empty or garbled
        return
    if is_dead(stale):  # our own crash; else another cluster's pid (a clone's copy)
        deadline = time.monotonic() + STRAGGLER_WAIT
        while left := processes_in(pgdata):
            if time.monotonic() >= deadline:
                raise Aborted(f"processes {left} of the previous postmaster on {pgdata} "
                                  "still run")
            await asyncio.sleep(0.01)
    if _fs.remove_if_exists(pgdata / PIDFILE):
        log.info("removed stale %s in %s (pid %d)", PIDFILE, pgdata, stale)


def _clear_stale_socket_locks(socket_dir: Path) -> None:
    """Removes `.s.PGSQL.PORT.lock` files (and their sockets) whose pid is dead.

    The socket directory is the branch's own, so a lock there is its previous
    postmaster's; removing it only when that pid is dead (or a zombie) spares
    the restart after a crash the refusal Postgres gives a zombie's lock.
    """
    for lock in socket_dir.glob(".s.PGSQL.*.lock"):
        pid = lockfile_pid(lock)
        if pid is not None and not is_dead(pid):
            continue
        lock.unlink(missing_ok=True)
        socket_dir.joinpath(lock.name.removesuffix(".lock")).unlink(missing_ok=True)
        log.info("removed stale %s (pid %s)", lock, pid)


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def _cannot_write(pgdata: Path, log_path: Path | None, offset: int) -> bool:
    """True when the data's filesystem is (all but) full, or the log, past `offset`,
    reports a write that failed for want of space (on a full pool the log itself
    may not get written, hence both)."""
    with contextlib.suppress(OSError):
        fs = os.statvfs(pgdata)
        if fs.f_bavail * fs.f_frsize < FULL_BYTES:
            return True
    if log_path is None:
        return False
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read(1 << 20)
    except OSError:
        return False
    return any(marker in text for marker in _CANNOT_WRITE)


async def _wait_exit(postmaster: Postmaster, timeout: float, log_path: Path | None = None,
                     log_offset: int = 0) -> bool:
    """False after `timeout`, or as soon as the log says the server cannot write."""
    deadline = time.monotonic() + timeout
    polls = 0
    while postmaster.is_alive():
        if time.monotonic() >= deadline:
            return False
        polls += 1
        if polls % 30 == 0 and _cannot_write(postmaster.pgdata, log_path, log_offset):
            return False
        await asyncio.sleep(POLL_INTERVAL)
    return True


def _signal(postmaster: Postmaster, sig: signal.Signals) -> None:
    # Re-check identity right before signalling: never signal a reused pid.
    if postmaster.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster.pid, sig)


async def stop(pgdata: Path, mode: str = "fast", timeout: float = 60.0,
               log_path: Path | None = None) -> None:
    """Stops the postmaster on `pgdata` with `mode` (smart, fast or immediate).

    A no-op if none runs. Waits for the process to exit by polling /proc;
    after `timeout` escalates to immediate, and at once when `log_path` (the
    server log) says the shutdown checkpoint cannot be written (a full pool:
    crash recovery at the next start replaces it). Raises Aborted if even
    immediate does not end it within IMMEDIATE_GRACE seconds.
    """
    if mode not in STOP_SIGNALS:
        raise InvalidArgument("mode", f"must be one of {', '.join(STOP_SIGNALS)}")
    postmaster = find_live_postmaster(pgdata)
    if postmaster is None:
        return
    log_offset = _size(log_path)
    _signal(postmaster, STOP_SIGNALS[mode])
    if await _wait_exit(postmaster, timeout, log_path, log_offset):
        return
    log.warning("postmaster %d did not stop (%s): out of space for its shutdown checkpoint, "
                "or still running after %.0fs; stopping it with immediate", postmaster.pid,
                mode, timeout)
    _signal(postmaster, signal.SIGQUIT)
    if not await _wait_exit(postmaster, IMMEDIATE_GRACE):
        raise Aborted(f"postmaster {postmaster.pid} did not exit after SIGQUIT")


async def quiesced_stop(pgdata: Path, socket_dir: Path, port: int,
                        log_path: Path | None = None) -> int:
    """Stops a running postmaster without losing a commit, sooner than a fast stop
    where archiving is on; returns the client sessions it ended (0 if none runs).

    A fast stop first switches WAL segments, writing out the rest of the current
    one (up to 16 MiB of zeros), then waits for the archiver to take it. Instead:
    1. a session of our own, over the socket;
    2. SIGTERM, a smart shutdown: the postmaster takes no new connection (a
       client gets 57P03, "the database system is shutting down") while the
       sessions it has go on;
    3. every other session ended, then a CHECKPOINT, which flushes WAL
       (asynchronous commits included);
    4. an immediate stop while our session still holds the smart shutdown back
       (the last session's exit would start Postgres' own shutdown checkpoint).
    The next start on this data is a crash recovery of the few records since the
    CHECKPOINT. Should a step fail, the stop is a fast one.
    """
    postmaster = find_live_postmaster(pgdata)
    if postmaster is None:
        return 0
    conn = await sql.connect(socket_dir, port)
    try:
        _signal(postmaster, signal.SIGTERM)  # re-checks it is the same process
        try:
            ended = await sql.end_other_sessions(conn)
            await conn.execute("CHECKPOINT")
        except BaseException:
            await stop(pgdata, "fast", log_path=log_path)
            raise
        await stop(pgdata, "immediate", log_path=log_path)
        return ended
    finally:
        with contextlib.suppress(Exception):
            await conn.close()
