"""~/.pgpass lines (https://www.postgresql.org/docs/current/libpq-pgpass.html).

`cygnet connect --env` puts the branch's password here, never on stdout: one
line per host:port:dbname:user, replaced in place when it exists (a reset
branch keeps its password, a recreated one gets a new one), file mode 0600
(libpq ignores a .pgpass that others can read).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def path() -> Path:
    return Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass")


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def fields(line: str) -> list[str]:
    """The unescaped fields of a line."""
    out, cur, i = [], "", 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            cur += line[i + 1]
            i += 2
            continue
        if ch == ":":
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return out


def store(file: Path, host: str, port: int, dbname: str, user: str, password: str) -> bool:
    """Writes the line for host:port:dbname:user; True if the file changed."""
    key = [host, str(port), dbname, user]
    line = ":".join(escape(v) for v in (*key, password))
    try:
        old = file.read_text().splitlines()
    except FileNotFoundError:
        old = []
    kept: list[str] = []
    placed = False
    for existing in old:
        if fields(existing)[:4] == key and not existing.lstrip().startswith("#"):
            if not placed:  # the first one is replaced; any duplicate goes
                kept.append(line)
                placed = True
            continue
        kept.append(existing)
    if not placed:
        kept.append(line)
    if kept == old and (file.stat().st_mode & 0o077) == 0:
        return False
    _write(file, "".join(f"{x}\n" for x in kept))
    return True


def _write(file: Path, text: str) -> None:
    # Atomically, created 0600: never a moment where the password is readable by others.
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".pgpass.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
