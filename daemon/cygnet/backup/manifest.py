"""Backup manifests: what a backup contains, with a checksum over all of it.

File layout (the first two lines are enough to list a backup):

    CYGNET-MANIFEST 1\n
    <BackupInfo as JSON>\n
    <entries as JSON list>\n
    <digest blob: 16 bytes per block of every file, in entry order>
    <XXH3-128 of everything above>
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import xxhash

from cygnet.backup.errors import BackupNotFound, CorruptRepository
from cygnet.backup.fsutil import atomic_write
from cygnet.backup.models import BackupInfo
from cygnet.backup.repo import Repository
from cygnet.blocks import BLOCK_SIZE, DIGEST_SIZE

MAGIC = b"CYGNET-MANIFEST 1\n"


@dataclass(frozen=True)
class Entry:
    """One path of the backed-up tree; path is relative, '/'-separated, '.' is the root.

    Names that are not UTF-8 are kept via surrogateescape (os.fsdecode)."""

    path: str
    kind: str  # "file", "dir" or "symlink"
    mode: int  # permission bits
    mtime_ns: int = 0
    size: int = 0  # files only
    target: str = ""  # symlinks only

    @property
    def nblocks(self) -> int:
        return -(-self.size // BLOCK_SIZE)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "p": _enc(self.path),
            "k": self.kind,
            "m": self.mode,
            "t": self.mtime_ns,
        }
        if self.kind == "file":
            data["s"] = self.size
        if self.kind == "symlink":
            data["l"] = _enc(self.target)
        return data

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Entry:
        return cls(_dec(d["p"]), d["k"], d["m"], d["t"], d.get("s", 0), _dec(d.get("l", "")))


def _enc(name: str) -> str:
    # JSON cannot hold lone surrogates portably: escape non-UTF-8 names.
    try:
        name.encode()
        return name
    except UnicodeEncodeError:
        return "b64:" + base64.b64encode(name.encode(errors="surrogateescape")).decode()


def _dec(name: str) -> str:
    if name.startswith("b64:"):
        return base64.b64decode(name[4:]).decode(errors="surrogateescape")
    return name


@dataclass(frozen=True)
class Manifest:
    info: BackupInfo
    entries: list[Entry]
    digests: bytes  # all files' digest arrays concatenated in entry order

    def files(self) -> Iterator[tuple[Entry, bytes]]:
        """(entry, digest array) of each regular file."""
        pos = 0
        for entry in self.entries:
            if entry.kind == "file":
                end = pos + entry.nblocks * DIGEST_SIZE
                yield entry, self.digests[pos:end]
                pos = end


def encode(manifest: Manifest) -> list[bytes]:
    head = MAGIC + json.dumps(manifest.info.to_json()).encode() + b"\n"
    entries = json.dumps([e.to_json() for e in manifest.entries]).encode() + b"\n"
    h = xxhash.xxh3_128()
    for part in (head, entries, manifest.digests):
        h.update(part)
    return [head, entries, manifest.digests, h.digest()]


def decode(data: bytes, name: str) -> Manifest:
    """Parses a manifest; CorruptRepository if it fails its checksum or shape."""
    body, checksum = data[:-16], data[-16:]
    if not body.startswith(MAGIC) or xxhash.xxh3_128_digest(body) != checksum:
        raise CorruptRepository(f"{name}: manifest fails its checksum")
    try:
        info_end = body.index(b"\n", len(MAGIC))
        entries_end = body.index(b"\n", info_end + 1)
        info = BackupInfo.from_json(json.loads(body[len(MAGIC) : info_end]))
        entries = [Entry.from_json(e) for e in json.loads(body[info_end + 1 : entries_end])]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptRepository(f"{name}: malformed manifest: {e}") from None
    manifest = Manifest(info, entries, body[entries_end + 1 :])
    if sum(e.nblocks for e in entries if e.kind == "file") * DIGEST_SIZE != len(manifest.digests):
        raise CorruptRepository(f"{name}: digest blob does not match the file sizes")
    return manifest


def write_manifest(repo: Repository, manifest: Manifest) -> None:
    """Publishes a backup: only after this rename does it exist."""
    path = repo.manifest_path(manifest.info.backup_id)
    atomic_write(path, encode(manifest), repo.tmp_dir)


def read_manifest(repo: Repository, backup_id: str) -> Manifest:
    path = repo.manifest_path(backup_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BackupNotFound(f"no backup {backup_id}") from None
    return decode(data, path.name)


def read_info(repo: Repository, backup_id: str) -> BackupInfo:
    """The header of a manifest, without reading or checking the rest."""
    path = repo.manifest_path(backup_id)
    with open(path, "rb") as f:
        if f.readline() != MAGIC:
            raise CorruptRepository(f"{path.name}: not a manifest")
        try:
            return BackupInfo.from_json(json.loads(f.readline()))
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptRepository(f"{path.name}: malformed manifest header: {e}") from None
