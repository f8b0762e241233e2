"""Man pages generated from the click definitions: cygnet(1), cygnet-db(1), cygnet-db-rm(1)...

    python -m cygnet.cli.manpages DIR     # writes DIR/cygnet*.1

scripts/setup installs them into the venv's share/man/man1, so `man cygnet-db-rm`
works; they are generated, never edited, so they cannot drift from --help.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import click

from cygnet import __version__


def roff(text: str) -> str:
    """Escapes text for roff: backslashes, dashes, and control characters at line start."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + ln if ln.startswith((".", "'")) else ln for ln in text.split("\n"))


def _paragraphs(text: str) -> list[str]:
    """click's help text as roff: `\\b` blocks stay as written, the rest is filled."""
    out: list[str] = []
    for block in inspect.cleandoc(text).split("\n\n"):
        if block.startswith("\b\n"):
            out += [".PP", ".nf", roff(block[2:]), ".fi"]
        else:
            out += [".PP", roff(" ".join(block.split()))]
    return out


def page(command: click.Command, path: list[str]) -> str:
    ctx = click.Context(command, info_name=" ".join(path))
    name = "-".join(path)
    lines = [f'.TH "{name.upper()}" "1" "" "cygnet {__version__}" "Cygnet Manual"',
             ".SH NAME", f"{roff(name)} \\- {roff(command.get_short_help_str(limit=200))}",
             ".SH SYNOPSIS", f".B {roff(' '.join(path))}",
             roff(" ".join(command.collect_usage_pieces(ctx)))]
    if command.help:
        lines += [".SH DESCRIPTION", *_paragraphs(command.help)]
    options = [r for p in command.get_params(ctx)
               if isinstance(p, click.Option) and (r := p.get_help_record(ctx))]
    if options:
        lines.append(".SH OPTIONS")
        for opts, help_ in options:
            lines += [".TP", f"\\fB{roff(opts)}\\fR", roff(help_)]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for sub in command.list_commands(ctx):
            cmd = command.get_command(ctx, sub)
            if cmd is not None and not cmd.hidden:
                lines += [".TP", f"\\fB{roff(sub)}\\fR",
                          f"{roff(cmd.get_short_help_str(limit=200))} See "
                          f"\\fB{roff('-'.join([*path, sub]))}\\fR(1)."]
    if command.epilog:
        lines += [".SH NOTES", *_paragraphs(command.epilog)]
    see = "cygnet" if len(path) > 1 else "cygnetd"
    lines += [".SH SEE ALSO", f"\\fB{see}\\fR(1), docs/cli.md"]
    return "\n".join(lines) + "\n"


def pages(command: click.Command, path: list[str] | None = None) -> dict[str, str]:
    """Every page of the tree under `command`, by file name."""
    path = path or ["cygnet"]
    found = {f"{'-'.join(path)}.1": page(command, path)}
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for sub in command.list_commands(ctx):
            cmd = command.get_command(ctx, sub)
            if cmd is not None and not cmd.hidden:
                found.update(pages(cmd, [*path, sub]))
    return found


def write(directory: Path) -> list[Path]:
    from cygnet.cli.app import cli

    directory.mkdir(parents=True, exist_ok=True)
    made = pages(cli)
    for stale in directory.glob("cygnet*.1"):
        if stale.name not in made:  # a command that is gone
            stale.unlink()
    for name, text in made.items():
        (directory / name).write_text(text)
    return [directory / name for name in made]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m cygnet.cli.manpages DIR")
    print(f"wrote {len(write(Path(sys.argv[1])))} man pages to {sys.argv[1]}")
