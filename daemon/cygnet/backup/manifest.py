"""Backup manifests: what a backup contains, with a checksum over all of it.

File layout, version 2 (the first two lines are enough to list a backup, the
third to tell a full manifest from a delta):

    CYGNET-MANIFEST 2\n
    <BackupInfo as JSON>\n
    <link as JSON: {} for a full manifest; for a delta
     {"base": <backup id>, "digests": <hex XXH3-128 of the materialized digest blob>}>\n
    <length of the frame below: 8 bytes little-endian>
    <zstd frame of: {"entries": [...], "ops": [...]} as JSON, \n, patch indexes>
    <payload: a full manifest's digest blob, or a delta's digests (delta.py)>
    <XXH3-128 of everything above>

The digest blob of a backup holds 16 bytes per block of every file, in entry
order. A delta stores it relative to its base, which is always a full
manifest, so reading any manifest reads at most one other file; the digests
sum catches a base that is not the one the delta was encoded against.

Version 1 (still read): CYGNET-MANIFEST 1, BackupInfo, the entries as a plain
JSON line, the digest blob, the checksum.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import xxhash
import zstandard

from cygnet.backup import delta
from cygnet.backup.delta import Delta, FileDigests
from cygnet.backup.errors import BackupNotFound, CorruptRepository
from cygnet.backup.fsutil import atomic_write
from cygnet.backup.models import BACKUP_ID_RE, BackupInfo
from cygnet.backup.repo import Repository
from cygnet.blocks import BLOCK_SIZE, DIGEST_SIZE

MAGIC = b"CYGNET-MANIFEST 2\n"
MAGIC_V1 = b"CYGNET-MANIFEST 1\n"
LEVEL = 3  # the entries are mostly mtimes and sizes: higher levels gain little
CANDIDATES = 3  # full manifests a new one is delta-encoded against


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


def _file_digests(manifest: Manifest) -> list[FileDigests]:
    return [(entry.path, digests) for entry, digests in manifest.files()]


def encode(manifest: Manifest, base: Manifest | None = None) -> list[bytes]:
    """A full manifest, or with `base` (a full one) a delta against it."""
    head = MAGIC + json.dumps(manifest.info.to_json()).encode() + b"\n"
    section: dict[str, Any] = {"entries": [e.to_json() for e in manifest.entries]}
    link: dict[str, str] = {}
    indices, payload = b"", manifest.digests
    if base is not None:
        d = delta.encode(_file_digests(manifest), _file_digests(base))
        section["ops"], indices, payload = d.ops, d.indices, d.payload
        link = {
            "base": base.info.backup_id,
            "digests": xxhash.xxh3_128_digest(manifest.digests).hex(),
        }
    frame = zstandard.ZstdCompressor(level=LEVEL).compress(
        json.dumps(section).encode() + b"\n" + indices
    )
    parts = [head, json.dumps(link).encode() + b"\n", len(frame).to_bytes(8, "little"), frame]
    parts.append(payload)
    h = xxhash.xxh3_128()
    for part in parts:
        h.update(part)
    return [*parts, h.digest()]


@dataclass(frozen=True)
class Stored:
    """A manifest as stored: full, or a delta that needs its base to materialize."""

    info: BackupInfo
    entries: list[Entry]
    base: str | None
    digests_sum: bytes  # deltas: XXH3-128 of the materialized digest blob
    delta: Delta  # full manifests: no ops, the payload is the digest blob

    def materialize(self, base: Manifest | None) -> Manifest:
        """ValueError if the delta does not fit `base` (which a full manifest ignores)."""
        if self.base is None:
            blocks = sum(e.nblocks for e in self.entries if e.kind == "file")
            if blocks * DIGEST_SIZE != len(self.delta.payload) or self.delta.indices:
                raise ValueError("digest blob does not match the file sizes")
            return Manifest(self.info, self.entries, self.delta.payload)
        assert base is not None and base.info.backup_id == self.base
        shapes = [(e.path, e.nblocks) for e in self.entries if e.kind == "file"]
        digests = delta.decode(shapes, self.delta, _file_digests(base))
        if xxhash.xxh3_128_digest(digests) != self.digests_sum:
            raise ValueError(f"digests differ from those encoded against {self.base}")
        return Manifest(self.info, self.entries, digests)


def decode(data: bytes, name: str) -> Stored:
    """Parses a manifest; CorruptRepository if it fails its checksum or shape."""
    body, checksum = data[:-16], data[-16:]
    if not body.startswith((MAGIC, MAGIC_V1)) or xxhash.xxh3_128_digest(body) != checksum:
        raise CorruptRepository(f"{name}: manifest fails its checksum")
    try:
        return _decode_v1(body) if body.startswith(MAGIC_V1) else _decode_v2(body)
    except (ValueError, KeyError, TypeError, zstandard.ZstdError) as e:
        raise CorruptRepository(f"{name}: malformed manifest: {e}") from None


def _decode_v1(body: bytes) -> Stored:
    info_end = body.index(b"\n", len(MAGIC_V1))
    entries_end = body.index(b"\n", info_end + 1)
    info = BackupInfo.from_json(json.loads(body[len(MAGIC_V1) : info_end]))
    entries = [Entry.from_json(e) for e in json.loads(body[info_end + 1 : entries_end])]
    return Stored(info, entries, None, b"", Delta([], b"", body[entries_end + 1 :]))


def _decode_v2(body: bytes) -> Stored:
    info_end = body.index(b"\n", len(MAGIC))
    link_end = body.index(b"\n", info_end + 1)
    info = BackupInfo.from_json(json.loads(body[len(MAGIC) : info_end]))
    base, digests_sum = _parse_link(body[info_end + 1 : link_end])
    frame_at = link_end + 9
    frame_end = frame_at + int.from_bytes(body[link_end + 1 : frame_at], "little")
    if frame_end > len(body):
        raise ValueError("compressed section runs past the end")
    section = zstandard.ZstdDecompressor().decompress(body[frame_at:frame_end])
    json_end = section.index(b"\n")
    parsed = json.loads(section[:json_end])
    entries = [Entry.from_json(e) for e in parsed["entries"]]
    ops = parsed.get("ops", [])
    if (base is None) != ("ops" not in parsed) or not isinstance(ops, list):
        raise ValueError("file ops do not match the base")
    patch = Delta(ops, section[json_end + 1 :], body[frame_end:])
    return Stored(info, entries, base, digests_sum, patch)


def _parse_link(line: bytes) -> tuple[str | None, bytes]:
    link = json.loads(line)
    if not link:
        return None, b""
    base = link["base"]
    # The id becomes a path: never let a manifest name anything else.
    if not isinstance(base, str) or not BACKUP_ID_RE.fullmatch(base):
        raise ValueError(f"bad base id {base!r}")
    return base, bytes.fromhex(link["digests"])


def write_manifest(repo: Repository, manifest: Manifest, exclude: Collection[str] = ()) -> None:
    """Publishes a backup: only after this rename does it exist.

    Written as a delta against the full manifest that gives the smallest
    one, unless that is over half the size of a full manifest. Backups in
    `exclude` are not used as bases (prune is about to delete them)."""
    chunks = encode(manifest)
    full_size = sum(map(len, chunks))
    best = None
    for base in _candidate_bases(repo, manifest.info, exclude):
        candidate = encode(manifest, base)
        if best is None or sum(map(len, candidate)) < sum(map(len, best)):
            best = candidate
    if best is not None and sum(map(len, best)) * 2 <= full_size:
        chunks = best
    atomic_write(repo.manifest_path(manifest.info.backup_id), chunks, repo.tmp_dir)


def _candidate_bases(
    repo: Repository, info: BackupInfo, exclude: Collection[str]
) -> Iterator[Manifest]:
    """The newest few readable full manifests, those of the same database first.

    Only headers are read until CANDIDATES of that database are found."""
    database = info.metadata.get("database")
    same: list[str] = []
    other: list[str] = []
    for backup_id in reversed(repo.backup_ids()):  # ids sort by creation time
        if backup_id in exclude or backup_id == info.backup_id:
            continue
        try:
            head, base = read_header(repo, backup_id)
        except (CorruptRepository, OSError):
            continue  # a damaged manifest must not fail a new backup
        if base is None:
            (same if head.metadata.get("database") == database else other).append(backup_id)
            if len(same) == CANDIDATES:
                break
    for backup_id in (same + other)[:CANDIDATES]:
        try:
            yield _load(repo, backup_id).materialize(None)
        except (BackupNotFound, CorruptRepository, OSError, ValueError):
            continue


def _load(repo: Repository, backup_id: str) -> Stored:
    path = repo.manifest_path(backup_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BackupNotFound(f"no backup {backup_id}") from None
    return decode(data, path.name)


def read_manifest(repo: Repository, backup_id: str) -> Manifest:
    """The backup's complete manifest, a delta's base read and applied.

    CorruptRepository if it or its base is unreadable or missing."""
    stored = _load(repo, backup_id)
    base = None
    if stored.base is not None:
        base = _read_base(repo, backup_id, stored.base)
    try:
        return stored.materialize(base)
    except ValueError as e:
        raise CorruptRepository(f"{backup_id}.manifest: malformed manifest: {e}") from None


def _read_base(repo: Repository, backup_id: str, base_id: str) -> Manifest:
    what = f"{backup_id}.manifest: its base backup {base_id}"
    try:
        base = _load(repo, base_id)
        if base.base is not None:
            raise CorruptRepository(f"{what} is itself a delta")
        return base.materialize(None)
    except BackupNotFound:
        raise CorruptRepository(f"{what} is missing") from None
    except (CorruptRepository, ValueError, OSError) as e:
        raise CorruptRepository(f"{what} is unreadable: {e}") from None


def read_header(repo: Repository, backup_id: str) -> tuple[BackupInfo, str | None]:
    """BackupInfo and base backup id (None for a full manifest), from the header only."""
    path = repo.manifest_path(backup_id)
    with open(path, "rb") as f:
        info, magic = _read_info(f, path.name)
        if magic == MAGIC_V1:
            return info, None
        try:
            return info, _parse_link(f.readline())[0]
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptRepository(f"{path.name}: malformed manifest header: {e}") from None


def read_info(repo: Repository, backup_id: str) -> BackupInfo:
    """The header of a manifest, without reading or checking the rest."""
    path = repo.manifest_path(backup_id)
    with open(path, "rb") as f:
        return _read_info(f, path.name)[0]


def _read_info(f: BinaryIO, name: str) -> tuple[BackupInfo, bytes]:
    magic = f.readline()
    if magic not in (MAGIC, MAGIC_V1):
        raise CorruptRepository(f"{name}: not a manifest")
    try:
        return BackupInfo.from_json(json.loads(f.readline())), magic
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptRepository(f"{name}: malformed manifest header: {e}") from None
