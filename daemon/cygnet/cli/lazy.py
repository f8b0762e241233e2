"""A click group whose subcommands are imported only when one is run.

`cygnet --help` and `cygnet --version` must answer in tens of milliseconds, so
the root group knows each subcommand by its import path and its one-line help;
the module (and with it grpc, protobuf and rich) is loaded only when that
subcommand runs or shows its own help.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click


@dataclass(frozen=True)
class Lazy:
    path: str  # "package.module:attribute"
    help: str  # the one line shown in the parent's command list


class LazyGroup(click.Group):
    """Lists subcommands in the order given, and imports each one on first use."""

    def __init__(self, *args: object, lazy: dict[str, Lazy] | None = None,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy: dict[str, Lazy] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *(name for name in self.commands if name not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attr = self.lazy[cmd_name].path.partition(":")
            command = getattr(importlib.import_module(module), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name].path} is not a click command")
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The stored one-liners: listing the commands imports none of them.
        rows = [(name, self.lazy[name].help if name in self.lazy
                 else self.commands[name].get_short_help_str())
                for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
