"""Value types returned by the backup API."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from cygnet.errors import InvalidArgument

# Caller metadata is a flat map of JSON scalars (database, branch, pg version...).
MetadataValue = str | int | float | bool | None
Metadata = Mapping[str, MetadataValue]
# Progress hook of long calls: (files done, bytes done). Called from the calling thread.
ProgressFn = Callable[[int, int], None]

# Backup ids are generated: UTC time to the microsecond (so ids sort by age)
# and a random suffix. The pattern keeps an id a caller passes back from ever
# reaching a path as anything but a plain file name.
BACKUP_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}$")


def check_backup_id(backup_id: str) -> str:
    if not BACKUP_ID_RE.fullmatch(backup_id):
        raise InvalidArgument("backup_id", f"not a backup id: {backup_id!r}")
    return backup_id


def check_metadata(metadata: Metadata) -> dict[str, MetadataValue]:
    out: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidArgument("metadata", f"key {key!r} is not a string")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise InvalidArgument("metadata", f"{key}: {type(value).__name__} is not a scalar")
        out[key] = value
    return out


@dataclass(frozen=True)
class BackupInfo:
    """Summary of one backup, stored in its manifest header."""

    backup_id: str
    created_at: datetime
    metadata: dict[str, MetadataValue]
    file_count: int
    logical_bytes: int  # sum of file sizes
    block_count: int  # blocks referenced by the backup (with repeats)
    new_blocks: int  # distinct blocks this backup added to the repository
    new_bytes: int  # compressed bytes this backup added to packs
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackupInfo:
        return cls(**{**data, "created_at": datetime.fromisoformat(data["created_at"])})


@dataclass(frozen=True)
class VerifyIssue:
    """One problem found by verify(): kind is pack, index, manifest or missing-block."""

    kind: str
    path: str
    detail: str


@dataclass
class VerifyReport:
    packs_checked: int = 0
    blocks_checked: int = 0
    bytes_checked: int = 0  # uncompressed bytes re-hashed
    manifests_checked: int = 0
    unreferenced_blocks: int = 0  # stored but used by no backup (prune removes them)
    issues: list[VerifyIssue] = field(default_factory=list)
    garbage: list[str] = field(default_factory=list)  # left by a crash; harmless

    @property
    def ok(self) -> bool:
        return not self.issues


@dataclass(frozen=True)
class RestoreInfo:
    backup_id: str
    files: int
    bytes_written: int
    duration_s: float


@dataclass(frozen=True)
class PruneReport:
    deleted_backups: list[str]
    packs_deleted: int
    packs_rewritten: int
    blocks_removed: int
    bytes_freed: int  # pack bytes removed, net of rewritten packs
