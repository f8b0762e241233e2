"""Repository layout, configuration and locks.

    <repo>/cygnet-backup.json     format marker and parameters
    <repo>/writer.lock            flock: one writer (backup or prune) at a time
    <repo>/readers.lock           flock: shared by readers, exclusive for prune
    <repo>/packs/<id>.pack        zstd frames, one per distinct 8 KiB block
    <repo>/packs/<id>.idx         digest -> frame records; its presence commits the pack
    <repo>/backups/<id>.manifest  one per backup
    <repo>/tmp/                   temp files of writers, emptied under the writer lock

Backups only add files, so readers run beside a backup; prune deletes, so
it waits for readers. flock locks die with their process: a kill -9 never
leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cygnet.backup.errors import RepositoryLocked, RepositoryNotFound
from cygnet.backup.fsutil import atomic_write, fsync_dir

CONFIG_NAME = "cygnet-backup.json"
CONFIG = {
    "format": "cygnet-backup-repository",
    "version": 1,
    "block_size": 8192,
    "digest": "xxh3-128",
    "compression": "zstd",
}


@dataclass(frozen=True)
class Repository:
    root: Path

    @property
    def packs_dir(self) -> Path:
        return self.root / "packs"

    @property
    def backups_dir(self) -> Path:
        return self.root / "backups"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def pack_path(self, pack_id: int) -> Path:
        return self.packs_dir / f"{pack_id:016x}.pack"

    def idx_path(self, pack_id: int) -> Path:
        return self.packs_dir / f"{pack_id:016x}.idx"

    def manifest_path(self, backup_id: str) -> Path:
        return self.backups_dir / f"{backup_id}.manifest"

    def pack_ids(self) -> list[int]:
        """Committed packs: those whose .idx exists."""
        return sorted(int(p.stem, 16) for p in self.packs_dir.glob("*.idx") if _is_hex(p.stem))

    def backup_ids(self) -> list[str]:
        return sorted(p.stem for p in self.backups_dir.glob("*.manifest"))

    def garbage(self) -> list[Path]:
        """Leftovers of a crashed writer: temp files and packs never committed."""
        packs = [p for p in self.packs_dir.glob("*.pack") if not p.with_suffix(".idx").exists()]
        return sorted([*self.tmp_dir.iterdir(), *packs])

    def clean_garbage(self) -> None:
        """Only under the writer lock: a running writer's files look like garbage."""
        for path in self.garbage():
            path.unlink(missing_ok=True)

    @contextmanager
    def writer_lock(self, timeout: float = 0.0) -> Iterator[None]:
        with _flock(self.root / "writer.lock", exclusive=True, timeout=timeout):
            yield

    @contextmanager
    def reader_lock(self, exclusive: bool = False, timeout: float = 0.0) -> Iterator[None]:
        with _flock(self.root / "readers.lock", exclusive=exclusive, timeout=timeout):
            yield


def _is_hex(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


def init_repository(path: str | os.PathLike[str]) -> Repository:
    """Creates an empty repository (idempotent)."""
    repo = Repository(Path(path))
    for d in (repo.root, repo.packs_dir, repo.backups_dir, repo.tmp_dir):
        d.mkdir(parents=True, exist_ok=True)
    config = repo.root / CONFIG_NAME
    if not config.exists():
        atomic_write(config, [json.dumps(CONFIG, indent=2).encode() + b"\n"], repo.tmp_dir)
        fsync_dir(repo.root)
    return open_repository(path)


def open_repository(path: str | os.PathLike[str], create: bool = False) -> Repository:
    repo = Repository(Path(path))
    config = repo.root / CONFIG_NAME
    if not config.exists():
        if create:
            return init_repository(path)
        raise RepositoryNotFound(f"{repo.root} is not a backup repository")
    data = json.loads(config.read_text())
    if data.get("format") != CONFIG["format"] or data.get("version") != CONFIG["version"]:
        raise RepositoryNotFound(f"{repo.root}: unsupported repository format {data!r}")
    return repo


@contextmanager
def _flock(path: Path, exclusive: bool, timeout: float) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RepositoryLocked(f"{path} is held by another process") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
