"""Per-invocation settings from the global options, and option decorators shared by commands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cygnet.cli.target import DEFAULT_SOCKET, Target

if TYPE_CHECKING:  # the client loads grpc: only commands that call the daemon need it
    from cygnet.cli.client import Client

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    socket: Path = DEFAULT_SOCKET
    host: str | None = None
    ca: Path | None = None
    server_name: str | None = None
    cert: Path | None = None  # client certificate and key for --host
    key: Path | None = None
    timeout: float | None = None
    json: bool = False
    debug: bool = False
    _client: Client | None = field(default=None, repr=False)

    def target(self) -> Target:
        return Target(self.socket, self.host, self.ca, self.server_name, self.cert, self.key)

    def client(self) -> Client:
        from cygnet.cli.client import Client

        if self._client is None:
            self._client = Client(self.target(), self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


pass_state = click.make_pass_decorator(State, ensure=True)


class OrderedGroup(click.Group):
    """Lists subcommands in the order they were added (create, list, show, rm), not A-Z."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(State).json = True


def json_option(f: F) -> F:
    """`--json` on a command, the same as the global `cygnet --json`."""
    return click.option("--json", "json_", is_flag=True, expose_value=False,
                        callback=_set_json, is_eager=True,
                        help="Print the result as JSON (shapes in docs/cli.md).")(f)


def db_option(f: F) -> F:
    return click.option("--db", "db", metavar="DB",
                        help="Database of BRANCH, when BRANCH is a bare name.")(f)
