"""What a killed test run leaves behind, and its removal before the next run.

A run that is killed (a CI timeout, a closed terminal, kill -9) skips its
fixtures' teardown: its pools stay imported or sit FAULTED in zfs-fuse's pool
cache once their files are gone, its postmasters and daemons keep running on
their mounts, and its namespaces stay. The next run removes all of that first,
unless another run is still going: every run holds a shared lock on
WORK/.run.lock, and only a run that gets it alone cleans.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

# Pools made by tests and benchmarks: tests/harness.py and the Ansible test.
TEST_POOL = re.compile(r"^cyt")
# Namespaces of tests/e2e/fleet.py: cy<4 hex digits>-<node>.
TEST_NETNS = re.compile(r"^cy[0-9a-f]{4}-[a-z0-9]+$")
KEEP = {".run.lock", "ansible-logs"}
START_ZFS = Path(__file__).resolve().parent.parent / "scripts" / "start-zfs"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


# The run lock stays open, shared, for the life of the process (see the docstring).
_run_lock: IO[str] | None = None


def _open_lock(work: Path) -> IO[str]:
    work.mkdir(parents=True, exist_ok=True)
    # Held open until the process exits: closing it drops the lock.
    return open(work / ".run.lock", "a+")


def join_run(work: Path) -> None:
    """Takes this process's shared lock; waits while another run is still cleaning."""
    global _run_lock
    if _run_lock is None:
        _run_lock = _open_lock(work)
        fcntl.flock(_run_lock, fcntl.LOCK_SH)


def clean_if_alone(work: Path) -> list[str]:
    """Cleans when no other run holds the lock, then holds it shared like `join_run`."""
    global _run_lock
    if _run_lock is not None:
        return []
    lock = _open_lock(work)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(lock, fcntl.LOCK_SH)
        _run_lock = lock
        return []
    try:
        return clean(work)
    finally:
        fcntl.flock(lock, fcntl.LOCK_SH)
        _run_lock = lock


def processes_using(work: Path) -> list[int]:
    """Pids whose working directory or command line lies below `work`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if str(work) in cmdline or cwd.is_relative_to(work):
            pids.append(int(entry.name))
    return pids


def mounts_below(work: Path) -> list[str]:
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if Path(target).is_relative_to(work):
            out.append(target)
    return sorted(out, reverse=True)


def clean(work: Path) -> list[str]:
    """Removes every leftover of earlier runs below `work`; returns what it removed."""
    removed = [f"process {pid}" for pid in _kill_processes(work)]
    if shutil.which("zpool"):
        pools = _run("zpool", "list", "-H", "-o", "name").stdout.split()
        removed += [f"pool {p}" for p in filter(TEST_POOL.match, pools) if destroy_pool(p)]
    for target in mounts_below(work):
        if _run("umount", "-l", target).returncode == 0:
            removed.append(f"mount {target}")
    if shutil.which("ip"):
        for ns in filter(TEST_NETNS.match, _run("ip", "netns", "list").stdout.split()):
            if _run("ip", "netns", "del", ns).returncode == 0:
                removed.append(f"netns {ns}")
    for entry in work.iterdir():
        if entry.name not in KEEP:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
            removed.append(f"path {entry.name}")
    if shutil.which("zfs-fuse"):
        # A zfs-fuse that now serves nothing is restarted, so no run inherits the
        # state of one that has served many (see scripts/start-zfs).
        subprocess.run([str(START_ZFS), "--fresh"], check=True, timeout=300)
    return removed


def _kill_processes(work: Path) -> list[int]:
    """SIGKILLs what runs below `work` and waits (10 s at most) until it is gone."""
    pids = processes_using(work)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes_using(work) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


def destroy_pool(pool: str, tries: int = 25) -> bool:
    """A mount stays busy for a moment after its last process exits: retries 0.2 s apart."""
    for _ in range(tries):
        if _run("zpool", "destroy", "-f", pool).returncode == 0:
            return True
        time.sleep(0.2)
    return False
