"""Migration files in golang-migrate's layout: `NNN_name.up.sql` and `NNN_name.down.sql`.

The version is the leading number (any width: 1, 001 and 20240101120000 all
work; leading zeros do not count, so `1_a` and `001_b` clash), the name the
words after the first underscore. A down file is optional. The client reads a
directory with `read_dir` and sends the files; the daemon checks them again
with the same rules.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cygnet.errors import InvalidArgument
from cygnet.names import shown

FILE = re.compile(r"(?P<version>[0-9]+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
                  r"\.(?P<dir>up|down)\.sql")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_SQL = 16 * 2**20  # a migration larger than this is a data load, not a migration


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: str
    down: str = ""
    file: str = ""

    @property
    def checksum(self) -> str:
        return checksum(self.up)

    @property
    def label(self) -> str:
        return self.file or f"{self.version}_{self.name}.up.sql"


def checksum(sql: str) -> str:
    """sha256 of the up file's bytes, hex (what golang-migrate users compare by hand)."""
    return hashlib.sha256(sql.encode()).hexdigest()


def check_name(path: str, value: str) -> None:
    if value and not _NAME.fullmatch(value):
        raise InvalidArgument(path, f"{shown(value)} is not a migration name: letters, "
                              "digits and '_.-', at most 128 characters")


def check_sql(path: str, value: str) -> None:
    if len(value.encode()) > MAX_SQL or "\x00" in value:
        raise InvalidArgument(path, "at most 16 MiB of SQL, without NUL bytes")


def check_file(path: str, value: str) -> None:
    if value and not FILE.fullmatch(value):
        raise InvalidArgument(path, f"{shown(value)} is not NNN_name.up.sql")


def ordered(migrations: list[Migration]) -> list[Migration]:
    """Sorted by version; two files with one version are an error naming both."""
    seen: dict[int, Migration] = {}
    for m in migrations:
        if m.version in seen:
            raise InvalidArgument("migrations", f"{seen[m.version].label} and {m.label} have "
                                  f"the same version {m.version}")
        seen[m.version] = m
    return [seen[v] for v in sorted(seen)]


def read_dir(directory: Path) -> list[Migration]:
    """The migrations in `directory`; a stray *.sql file is an error naming it."""
    if not directory.is_dir():
        raise InvalidArgument("DIR", f"{directory} is not a directory")
    ups: dict[str, tuple[int, str, str, str]] = {}
    downs: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        m = FILE.fullmatch(path.name)
        if m is None:
            raise InvalidArgument("DIR", f"{path.name} is not NNN_name.up.sql or "
                                  "NNN_name.down.sql (golang-migrate's layout)")
        key = f"{int(m['version'])}_{m['name']}"
        text = path.read_text(encoding="utf-8")
        check_sql(path.name, text)
        if m["dir"] == "up":
            ups[key] = (int(m["version"]), m["name"], text, path.name)
        else:
            downs[key] = text
    for key in downs:
        if key not in ups:
            raise InvalidArgument("DIR", f"down file for {key} has no up file")
    return ordered([Migration(v, n, up, downs.get(k, ""), f) for k, (v, n, up, f) in
                    ups.items()])
