"""How the zfs layer runs `zfs` and `zpool`: the shared runner (cygnet/command.py),
with zfs's errors turned into typed exceptions.

A `zfs` killed at its deadline or on cancellation may still have done its
work (the kernel module or zfs-fuse goes on without it): zfs/settle.py
re-reads the dataset where the outcome matters.
"""

from __future__ import annotations

from collections.abc import Sequence

from cygnet import command
from cygnet.command import CommandResult
from cygnet.zfs import mount_lock
from cygnet.zfs.errors import ZfsTimeout, error_from

__all__ = ["DEFAULT_TIMEOUT", "CommandResult", "CommandRunner"]

DEFAULT_TIMEOUT = 60.0

# Tools whose first argument is a verb; others are labelled by their name only,
# so the histogram's label values stay few.
_VERB_TOOLS = frozenset({"zfs", "zpool"})


class CommandRunner:
    """Runs commands with a deadline. `check=True` raises a typed ZfsError on failure."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout

    async def run(
        self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True
    ) -> CommandResult:
        args = [str(a) for a in argv]
        deadline = self.timeout if timeout is None else timeout
        verb = args[1] if args[0] in _VERB_TOOLS and len(args) > 1 else ""
        try:
            async with mount_lock.around(args):
                result = await command.run(args, timeout=deadline, verb=verb)
        except command.CommandTimedOut as exc:
            raise ZfsTimeout(str(exc), argv=args) from None
        if check and result.returncode != 0:
            raise error_from(args, result.returncode, result.stderr)
        return result
