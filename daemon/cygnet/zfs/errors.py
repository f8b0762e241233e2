"""Typed ZFS errors, mapped from the stderr of `zfs` and `zpool`.

The patterns hold for both OpenZFS and zfs-fuse: they share libzfs's messages.
"""

from __future__ import annotations

import re

from cygnet.errors import CygnetError


class ZfsError(CygnetError):
    """A zfs/zpool command failed. Carries the argv and stderr for the log."""

    def __init__(self, message: str, argv: list[str] | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.argv = argv or []
        self.stderr = stderr


class DatasetNotFound(ZfsError):
    """The dataset, snapshot or pool does not exist."""


class DatasetExists(ZfsError):
    """A dataset or snapshot of that name exists already."""


class DatasetBusy(ZfsError):
    """The dataset is in use (mounted and open, or being changed)."""


class HasDependents(ZfsError):
    """Snapshots, children or clones depend on the dataset."""


class OutOfSpace(ZfsError):
    """The pool has no room left."""


class ZfsTimeout(ZfsError):
    """The command did not finish within its deadline and was killed."""


# Ordered: the first matching pattern decides the class.
_PATTERNS: list[tuple[re.Pattern[str], type[ZfsError]]] = [
    (re.compile(r"out of space|no space left|quota exceeded", re.I), OutOfSpace),
    (re.compile(r"does not exist|no such pool|no such dataset|could not find any snapshots", re.I),
     DatasetNotFound),
    (re.compile(r"already exists", re.I), DatasetExists),
    (re.compile(r"dependent clones|has children|more recent snapshots|has dependent", re.I),
     HasDependents),
    (re.compile(r"is busy|device busy|resource busy", re.I), DatasetBusy),
]


def classify(stderr: str) -> type[ZfsError]:
    """The exception class that `stderr` of a failed zfs/zpool call stands for."""
    for pattern, cls in _PATTERNS:
        if pattern.search(stderr):
            return cls
    return ZfsError


def error_from(argv: list[str], returncode: int, stderr: str) -> ZfsError:
    first_line = stderr.strip().splitlines()[0] if stderr.strip() else f"exit status {returncode}"
    return classify(stderr)(first_line, argv=argv, stderr=stderr)
