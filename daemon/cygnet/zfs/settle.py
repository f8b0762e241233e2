"""What a killed `zfs` did: re-read the dataset instead of assuming.

A `zfs create` that passed its deadline was killed, but the kernel module or
zfs-fuse may finish the work anyway (or may already have). Answering
"failed" for a dataset that exists, or "done" for one that does not, would
leave the caller's idea of the host wrong, so the verbs whose outcome decides
what comes next (create, snapshot, clone, destroy) look again.

A cancelled call has no caller left to answer, so nothing is looked up then:
the runner logs the kill, and the next reader of the host (every request
reads ZFS afresh, and the reconciler finishes or undoes whatever a
`cygnet:phase` of creating or deleting says was cut short) sees the outcome.
"""

from __future__ import annotations

import logging

from cygnet.zfs.errors import ZfsTimeout
from cygnet.zfs.runner import DEFAULT_TIMEOUT, CommandRunner

log = logging.getLogger("cygnet.zfs")


async def exists(runner: CommandRunner, name: str) -> bool:
    # The full default deadline, even if the killed command had a shorter one.
    result = await runner.run(["zfs", "get", "-H", "-o", "value", "type", name],
                              timeout=max(runner.timeout, DEFAULT_TIMEOUT), check=False)
    return result.returncode == 0


async def run_settled(runner: CommandRunner, argv: list[str], name: str, *,
                      exists_after: bool) -> None:
    """Runs `argv`, which should leave `name` existing (or gone: `exists_after`)."""
    try:
        await runner.run(argv)
    except ZfsTimeout as exc:
        await settled(runner, exc, name, exists_after=exists_after)


async def settled(runner: CommandRunner, exc: ZfsTimeout, name: str, *,
                  exists_after: bool) -> None:
    """After `exc`, looks `name` up: if it is as the killed command should have
    left it, the command counts as done; otherwise a ZfsTimeout that says what
    was found goes on."""
    if await exists(runner, name) == exists_after:
        log.warning("%s timed out, but %s %s: counted as done", " ".join(exc.argv[:2]), name,
                    "exists" if exists_after else "is gone")
        return
    found = "does not exist" if exists_after else "still exists"
    raise ZfsTimeout(f"{exc}; {name} {found} after it was killed", argv=exc.argv) from None
