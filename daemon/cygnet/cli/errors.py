"""Exit codes and the one error type commands raise for a user-facing failure.

Scripts branch on the exit code, so each class of failure has its own number
(documented in docs/cli.md); everything unexpected is 1. No grpc import here:
main.py loads this before grpc, which must see GRPC_VERBOSITY first.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    ERROR = 1
    INVALID = 2  # also click's usage-error code, so both mean "fix your input"
    NOT_FOUND = 3
    CONFLICT = 4
    UNREACHABLE = 5
    DENIED = 6  # the caller's certificate or token is refused, or its role may not do this
    INTERRUPTED = 130


class CliError(Exception):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, message: str, code: Exit = Exit.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
