"""Tab completion of database and branch names, asked of the daemon.

Completion runs before the root group's callback, so the connection options
are read from the root context's parsed params. Any failure completes nothing:
a completion must never print an error or hang the shell.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cygnet.cli.target import DEFAULT_SOCKET, Target

if TYPE_CHECKING:  # loaded when completing, not by every command that offers completion
    from click.shell_completion import CompletionItem

    from cygnet.cli.client import Client

TIMEOUT = 2.0


def _client(ctx: click.Context) -> Client:
    from cygnet.cli.client import Client

    params = ctx.find_root().params
    target = Target(Path(params.get("socket_path") or DEFAULT_SOCKET), params.get("host"),
                    params.get("ca"), params.get("server_name"))
    return Client(target, TIMEOUT, retry=False)


def _names(ctx: click.Context, incomplete: str, branches: bool) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    client = _client(ctx)
    try:
        if branches and "/" in incomplete:
            db = incomplete.split("/", 1)[0]
            names = [f"{db}/{b.name}" for b in client.list_branches(db)]
        else:
            names = [d.name for d in client.list_databases()]
    except Exception:
        return []
    finally:
        client.close()
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def databases(ctx: click.Context, _param: click.Parameter, incomplete: str
              ) -> list[CompletionItem]:
    return _names(ctx, incomplete, branches=False)


def branches(ctx: click.Context, _param: click.Parameter, incomplete: str
             ) -> list[CompletionItem]:
    """`DB` first, then `DB/BRANCH` once a '/' is typed."""
    return _names(ctx, incomplete, branches=True)
