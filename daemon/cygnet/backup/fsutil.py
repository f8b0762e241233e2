"""Durable file operations: the crash-safety rules of the repository.

Data is fsynced before the name that publishes it appears (temp + rename),
and the directory is fsynced after a rename or unlink so the change itself
survives a crash.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, chunks: list[bytes], tmp_dir: Path) -> None:
    """Writes chunks to path so that a crash leaves either nothing or all of it."""
    tmp = tmp_dir / f"{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def unlink_durably(paths: list[Path]) -> None:
    """Removes files (missing ones are fine) and fsyncs their directories."""
    dirs = set()
    for path in paths:
        path.unlink(missing_ok=True)
        dirs.add(path.parent)
    for d in dirs:
        fsync_dir(d)
