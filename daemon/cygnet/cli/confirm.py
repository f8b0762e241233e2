"""Destructive commands ask first: `--yes` skips the question, `--dry-run` only lists.

On a terminal the user sees what would be destroyed and answers y/N. Without
a terminal (a script, a pipe, cron) and without --yes the command refuses with
exit 2: a script that deletes must say so. `--dry-run` prints what would be
destroyed, as `zfs destroy -nv` does, and changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from cygnet.cli.errors import CliError, Exit

F = TypeVar("F", bound=Callable[..., Any])


def destructive_options(f: F) -> F:
    f = click.option("--dry-run", "dry_run", is_flag=True,
                     help="List what would be destroyed, and change nothing.")(f)
    return click.option("--yes", "-y", "yes", is_flag=True,
                        help="Do not ask for confirmation (needed without a terminal).")(f)


def confirm(action: str, doomed: Callable[[], list[str]], *, yes: bool, dry_run: bool,
            json_output: bool) -> bool:
    """Whether to go on. `doomed` lists what would be destroyed; it is only asked
    for when shown (a dry run, or a question on a terminal), so `--yes` costs no call."""
    if dry_run:
        items = doomed()
        if json_output:
            import json

            click.echo(json.dumps({"dry_run": True, "action": action,
                                   "would_destroy": items}, indent=2, ensure_ascii=False))
        else:
            click.echo(f"would {action}:" if items else f"would {action}: nothing")
            for item in items:
                click.echo(f"  would destroy {item}")
        return False
    if yes:
        return True
    if not os.isatty(0):
        raise CliError(f"refusing to {action} without confirmation: stdin is not a terminal "
                       "(add --yes to go ahead, or --dry-run to see what would be destroyed)",
                       Exit.INVALID)
    items = doomed()
    click.echo(f"This will {action} and destroy:", err=True)
    for item in items:
        click.echo(f"  {item}", err=True)
    if not click.confirm("Go ahead?", default=False, err=True):
        raise CliError("cancelled; nothing was changed", Exit.ERROR)
    return True
