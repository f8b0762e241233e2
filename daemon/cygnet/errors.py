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


class OutOfRange(CygnetError):
    """A position outside what exists, e.g. an event cursor that was trimmed away."""


class ResourceExhausted(CygnetError):
    """Out of pool space or of ports."""


class Aborted(CygnetError):
    """The operation could not complete: a postmaster did not start, a Postgres tool or
    ZFS did not finish in time, a dataset was busy. What it made is undone and the
    message says why. A domain failure, not a transport one: a retry with the same
    request id gets this same answer."""


class Unavailable(CygnetError):
    """Another host could not be reached: a transport failure, so retrying may help.
    Only for the network; a local dependency that fails is Aborted."""


class PermissionDenied(CygnetError):
    """The caller is known but its role does not allow the call (e.g. an agent refused a
    call the coordinator forwarded for a caller it does not trust)."""


class Unauthenticated(CygnetError):
    """The caller could not be identified: no, an unknown or a revoked credential."""


class InternalError(CygnetError):
    """Something Cygnet did not expect; the message is logged in full."""
