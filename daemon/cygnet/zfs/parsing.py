"""Parsing of `zfs get -H -p -o name,property,value,source`: every line or an error.

A line that does not parse means a `zfs` we do not understand. Skipping it
would make a dataset look as if it lacked a property (a branch without its
id, a pool without its space), so it is an error instead.
"""

from __future__ import annotations

from collections.abc import Iterator

from cygnet.zfs.errors import ZfsError


class ZfsOutputError(ZfsError):
    """`zfs` printed a line Cygnet cannot parse."""


def get_rows(stdout: str) -> Iterator[tuple[str, str, str, str]]:
    """(name, property, value, source) per line; ZfsOutputError on a malformed one.

    Only the value may contain tabs (a user property can), so the name and the
    property are split off the front and the source off the back.
    """
    for number, line in enumerate(stdout.splitlines(), 1):
        head = line.split("\t", 2)
        if len(head) == 3 and "\t" in head[2]:
            name, prop = head[0], head[1]
            value, source = head[2].rsplit("\t", 1)
            if name and prop and source:
                yield name, prop, value, source
                continue
        shown = line if len(line) <= 200 else line[:200] + "..."
        raise ZfsOutputError(f"zfs get printed a malformed line {number}: {shown!r}",
                             argv=["zfs", "get"])
