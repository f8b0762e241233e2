"""Errors of the backup repository, each a subclass of one domain error."""

from __future__ import annotations

from cygnet.errors import AlreadyExists, FailedPrecondition, InternalError, NotFound


class BackupNotFound(NotFound):
    """No backup with that id in the repository."""


class RepositoryNotFound(NotFound):
    """The path is not a Cygnet backup repository."""


class RepositoryLocked(FailedPrecondition):
    """Another process holds the repository lock (a backup or prune is running)."""


class RestoreTargetNotEmpty(AlreadyExists):
    """restore() writes only into an absent or empty directory."""


class CorruptRepository(InternalError):
    """Stored data does not match its checksum, or a needed block is missing."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []
