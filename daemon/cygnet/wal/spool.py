"""The local spool: archive_command's fast, durable hand-off, ingested by cygnetd.

    SPOOL_ROOT/BRANCH_ID/gN/NAME     a finished WAL file (fsync'd, then renamed)
    SPOOL_ROOT/BRANCH_ID/gN/.NAME.tmp  one being written

The archive program (native/wal/cygnet_wal.c) refuses a file once the spool
of that branch would pass its bound, so Postgres keeps the WAL in pg_wal
while the repository cannot take it. A spooled file is removed only after
the repository holds it durably.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cygnet.wal.repo import WalConflict, WalRepository

log = logging.getLogger("cygnet.wal")


@dataclass
class Backlog:
    """What the spool holds: not yet in the local repository."""

    files: int = 0
    bytes: int = 0
    oldest: float = 0.0  # mtime of the oldest spooled file; 0 when empty

    def lag_seconds(self, now: float) -> float:
        return max(0.0, now - self.oldest) if self.oldest else 0.0


def spool_dir(root: Path, branch_id: str, gen: int) -> Path:
    return root / branch_id / f"g{gen}"


def _entries(root: Path) -> list[tuple[str, int, Path]]:
    out: list[tuple[str, int, Path]] = []
    if not root.is_dir():
        return out
    for branch_dir in root.iterdir():
        for gen_dir in branch_dir.glob("g*") if branch_dir.is_dir() else []:
            if gen_dir.name[1:].isdigit():
                out.extend((branch_dir.name, int(gen_dir.name[1:]), f)
                           for f in gen_dir.iterdir() if not f.name.startswith("."))
    return out


def backlog(root: Path) -> dict[str, Backlog]:
    """Per branch id."""
    out: dict[str, Backlog] = {}
    for branch_id, _, path in _entries(root):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        b = out.setdefault(branch_id, Backlog())
        b.files += 1
        b.bytes += st.st_size
        b.oldest = min(b.oldest, st.st_mtime) if b.oldest else st.st_mtime
    return out


def ingest(root: Path, repo: WalRepository) -> int:
    """Moves every spooled file into the repository, oldest first; returns how many.

    A file that conflicts with an archived one stays (and is logged): the
    backlog grows until an operator looks, and Postgres keeps its WAL.
    """
    done = 0
    entries = []
    for branch_id, gen, path in _entries(root):
        try:
            entries.append((path.stat().st_mtime, path.name, branch_id, gen, path))
        except FileNotFoundError:
            continue
    for mtime, name, branch_id, gen, path in sorted(entries):
        try:
            repo.store(branch_id, gen, name, path.read_bytes(), mtime)
        except WalConflict as exc:
            log.error("%s", exc)
            continue
        path.unlink()
        done += 1
    return done


def drop_branch(root: Path, repo: WalRepository, branch_id: str) -> bool:
    """A deleted branch's spool: what is left goes into the repository (the
    branch's archive outlives it, until retention), then the directory goes.
    Returns False, keeping the directory, while a file could not be stored."""
    directory = root / branch_id
    left = False
    for bid, gen, path in sorted(_entries(root), key=lambda e: e[2].name):
        if bid != branch_id:
            continue
        try:
            repo.store(branch_id, gen, path.name, path.read_bytes(), path.stat().st_mtime)
            path.unlink()
        except FileNotFoundError:  # ingested meanwhile
            continue
        except WalConflict as exc:
            log.error("%s", exc)
            left = True
    if not left:
        shutil.rmtree(directory, ignore_errors=True)
    return not left


def wait_ingested(repo: WalRepository, branch_id: str, gen: int, name: str,
                  timeout: float) -> bool:
    """Polls for `name` in the repository (used after forcing a segment switch)."""
    deadline = time.monotonic() + timeout
    path = repo.dir(branch_id, gen) / f"{name}.zst"
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return os.path.exists(path)
