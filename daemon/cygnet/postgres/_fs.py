"""Small file helpers: postgres-owned directories, atomic writes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cygnet.postgres.layout import postgres_user


def ensure_postgres_dir(path: Path, mode: int = 0o700) -> None:
    """Creates `path` (and root-owned 0755 parents) if missing; makes it postgres-owned `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=mode)
    user = postgres_user()
    os.chown(path, user.uid, user.gid)
    os.chmod(path, mode)


def ensure_postgres_file(path: Path, *, truncate: bool = False) -> None:
    """Creates `path` (0600, postgres) if missing, or truncates it when asked."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, 0o600)
    try:
        user = postgres_user()
        os.fchown(fd, user.uid, user.gid)
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    """Replaces `path` with `text` via temp file + fsync + rename; the result is postgres-owned.

    A crash leaves either the old or the new file, never a half-written config.
    A file that already says `text`, with that owner and mode, is left alone: a
    daemon start adopting many clusters rewrites every config, and fsyncs cost.
    """
    user = postgres_user()
    try:
        st = path.stat()
        if ((st.st_uid, st.st_gid, st.st_mode & 0o7777) == (user.uid, user.gid, mode)
                and path.read_bytes() == text.encode("utf-8")):
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fchown(fd, user.uid, user.gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def remove_if_exists(path: Path) -> bool:
    """Unlinks `path`; returns whether it existed."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def tail_lines(path: Path, count: int = 20, max_bytes: int = 16384) -> str:
    """The last `count` lines of a (log) file, for error messages; "" if unreadable."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-count:])


def append_once(path: Path, line: str, comment: str) -> None:
    """Appends `line`, after a `# comment` line, unless the file has that line already."""
    text = path.read_text(encoding="utf-8")
    if line in text.splitlines():
        return
    if text and not text.endswith("\n"):
        text += "\n"
    atomic_write(path, f"{text}\n# {comment}\n{line}\n")
