"""Walks a source tree in a stable order: a directory before its contents."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cygnet.backup.manifest import Entry


@dataclass(frozen=True)
class SourceItem:
    path: Path
    entry: Entry  # size is the stat size; a file's stored size is what was read


# (relative path, is a directory) -> leave it out (a directory with its contents).
Skip = Callable[[str, bool], bool]


def scan(root: Path, skip: Skip | None = None) -> Iterator[SourceItem]:
    """Regular files, directories and symlinks (never followed). Sockets, fifos
    and devices are skipped: a data directory has none worth restoring."""
    yield SourceItem(root, _entry(".", root, os.lstat(root)))
    yield from _scan_dir(root, "", skip)


def _scan_dir(directory: Path, prefix: str, skip: Skip | None) -> Iterator[SourceItem]:
    try:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda d: d.name)
    except FileNotFoundError:  # a live source: a dropped database's directory
        return
    for child in children:
        rel = prefix + child.name
        path = directory / child.name
        try:
            st = child.stat(follow_symlinks=False)
        except FileNotFoundError:  # a live source: gone since it was listed
            continue
        if skip is not None and skip(rel, stat.S_ISDIR(st.st_mode)):
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            continue
        yield SourceItem(path, _entry(rel, path, st))
        if stat.S_ISDIR(st.st_mode):
            yield from _scan_dir(path, rel + "/", skip)


def _entry(rel: str, path: Path, st: os.stat_result) -> Entry:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return Entry(rel, "dir", mode, st.st_mtime_ns)
    if stat.S_ISLNK(st.st_mode):
        return Entry(rel, "symlink", mode, st.st_mtime_ns, target=os.readlink(path))
    return Entry(rel, "file", mode, st.st_mtime_ns, size=st.st_size)
