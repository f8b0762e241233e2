"""`cygnet completion SHELL`: the shell script that enables tab completion."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")


@click.command(epilog="""\b
Setup:
  bash:  echo 'eval "$(cygnet completion bash)"' >> ~/.bashrc
  zsh:   echo 'eval "$(cygnet completion zsh)"' >> ~/.zshrc
  fish:  cygnet completion fish > ~/.config/fish/completions/cygnet.fish""")
@click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell script for tab completion.

    SHELL is bash, zsh or fish (click's shell completion).
    """
    cls = get_completion_class(shell)
    assert cls is not None  # every name in SHELLS is registered by click
    root = ctx.find_root().command
    script = cls(root, {}, "cygnet", "_CYGNET_COMPLETE").source()
    click.echo(script)
