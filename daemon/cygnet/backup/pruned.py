"""The repository's journal of pruned objects, which the off-host copy follows.

Every place that removes an immutable object from the repository (backup
prune, WAL prune, the janitor of deleted branches' WAL) first appends its
path here, then removes it. The off-host uploader deletes those keys from the
bucket (offsite/expire.py) and takes them off the journal. Only a recorded
prune reaches the bucket: a repository that lost its files by accident (a new
disk, a wiped state directory) deletes nothing off-host, because nothing
names those files here.

Only a repository that an off-host copy follows keeps the journal: the
uploader creates FOLLOWED when it starts with deletions on, and removes it,
with the journal, when they are off; nothing else ever reads the journal.

One line per object: its path below the repository, a tab, and the earliest
time (seconds since the epoch) to try its off-host deletion again (0: at
once). A crash between the append and the removal leaves a name whose file
still exists; the uploader then drops the line and keeps the remote copy.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cygnet.backup.fsutil import atomic_write, unlink_durably

JOURNAL = "pruned-objects"
FOLLOWED = "pruned-objects.follow"  # present while an off-host copy follows prunes
_LOCK = "pruned-objects.lock"


@contextmanager
def _locked(repo: Path) -> Iterator[None]:
    """One writer of the journal at a time, across threads and processes (the CLI
    prunes too)."""
    fd = os.open(repo / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def relative(repo: Path, paths: Iterable[Path]) -> list[str]:
    return [p.relative_to(repo).as_posix() for p in paths]


def follow(repo: Path, on: bool) -> None:
    """Whether prunes are journaled from now on (off: the journal goes)."""
    if not repo.is_dir() or (repo / FOLLOWED).exists() == on:
        return
    with _locked(repo):
        if on:
            (repo / FOLLOWED).touch(0o600)
        else:
            (repo / FOLLOWED).unlink(missing_ok=True)
            (repo / JOURNAL).unlink(missing_ok=True)


def record(repo: Path, rels: Iterable[str]) -> None:
    """Appends `rels` (paths below `repo`), durably, before their files go."""
    if not (repo / FOLLOWED).exists():
        return
    lines = "".join(f"{rel}\t0\n" for rel in rels if "\n" not in rel and "\t" not in rel)
    if not lines:
        return
    with _locked(repo):
        fd = os.open(repo / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, lines.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def unlink_recorded(repo: Path, paths: list[Path]) -> None:
    """Records `paths` (files below `repo`), then removes them durably."""
    record(repo, relative(repo, paths))
    unlink_durably(paths)


def read(repo: Path) -> list[tuple[str, float]]:
    """The journal's entries in order: (path, earliest next try). A torn last line
    (a crash mid-append) is skipped: its file was not removed yet."""
    try:
        text = (repo / JOURNAL).read_text()
    except FileNotFoundError:
        return []
    out: list[tuple[str, float]] = []
    for line in text.splitlines(keepends=True):
        rel, sep, when = line.rstrip("\n").partition("\t")
        if not line.endswith("\n") or not sep or not rel:
            continue
        try:
            out.append((rel, float(when)))
        except ValueError:
            continue
    return out


def settle(repo: Path, done: set[str], later: dict[str, float]) -> None:
    """Drops the entries in `done` and sets the next try of those in `later`, keeping
    whatever was appended meanwhile."""
    with _locked(repo):
        kept = []
        for rel, when in read(repo):
            if rel in done:
                continue
            kept.append(f"{rel}\t{later.get(rel, when):.0f}\n")
        atomic_write(repo / JOURNAL, ["".join(kept).encode()], repo)
