"""How the Postgres layer runs its tools: the shared runner (cygnet/command.py),
optionally as the postgres user with a minimal environment."""

from __future__ import annotations

from pathlib import Path

from cygnet import command
from cygnet.command import CommandResult
from cygnet.errors import Aborted
from cygnet.postgres.layout import postgres_user

__all__ = ["CommandResult", "postgres_env", "run"]


def postgres_env() -> dict[str, str]:
    """A minimal environment for Postgres tools: nothing of the daemon's leaks through."""
    return {"PATH": "/usr/bin:/bin", "HOME": postgres_user().home, "LANG": "C.UTF-8"}


async def run(
    argv: list[str], *, timeout: float, as_postgres: bool = False, cwd: Path = Path("/")
) -> CommandResult:
    """Runs `argv` to completion; kills it and raises Aborted after `timeout` seconds."""
    run_as = None
    if as_postgres:
        user = postgres_user()
        run_as = command.RunAs(user.uid, user.gid, postgres_env())
    try:
        return await command.run(argv, timeout=timeout, run_as=run_as, cwd=cwd)
    except command.CommandTimedOut as exc:
        raise Aborted(str(exc)) from None
