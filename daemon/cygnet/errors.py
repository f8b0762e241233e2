"""Domain errors. The gRPC layer maps each class to one status code, in one place."""

from __future__ import annotations


class CygnetError(Exception):
    """Base of every error Cygnet reports to its users."""


class InvalidArgument(CygnetError):
    """A request field is malformed. `field` names it, `reason` says what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(CygnetError):
    """The named database, branch or snapshot does not exist."""


class AlreadyExists(CygnetError):
    """A database, branch or snapshot with that name exists already."""


class FailedPrecondition(CygnetError):
    """The request is valid but the current state forbids it (e.g. children exist)."""


class ResourceExhausted(CygnetError):
    """Out of pool space or of ports."""


class Unavailable(CygnetError):
    """A dependency (ZFS, a postmaster) did not answer in time; retrying may help."""


class InternalError(CygnetError):
    """Something Cygnet did not expect; the message is logged in full."""
