"""Archived WAL in the host's backup repository: immutable objects keyed by branch
and archive generation.

    BACKUP_DIR/wal/BRANCH_ID/gN/generation.json   what the generation continues
    BACKUP_DIR/wal/BRANCH_ID/gN/NAME.zst          one WAL file, zstd (as packs are)

A generation is one straight stretch of a branch's history. Generation 1 of
`main` starts at LSN 0; generation 1 of a child continues its parent's current
generation from the fork point; every rewind (reset, reset to a snapshot,
restore in place) starts a new generation that continues the one before it
(or the parent's) from the point it went back to. Each file's mtime is the
time of the last write to it in pg_wal (the archive program keeps it), so the
newest file says how recent the archive is. Nothing here is ever rewritten:
a second copy of a name must be byte-identical or it is refused.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import zstandard

from cygnet.errors import InternalError

LEVEL = 1  # as the block store's packs: WAL's zero tails and repeated pages compress at 1
META = "generation.json"
SUFFIX = ".zst"


# BRANCH_ID/gN/generation.json or BRANCH_ID/gN/NAME.zst: one level each, no dot files.
_ADOPTABLE = re.compile(r"[A-Za-z0-9_-]{1,64}/g[0-9]{1,9}/"
                        r"(generation\.json|[0-9A-Za-z_-][0-9A-Za-z._-]{0,63}\.zst)")


class WalConflict(InternalError):
    """A different file of the same name is archived already: never overwritten."""


@dataclass(frozen=True)
class Generation:
    branch_id: str
    gen: int
    start_lsn: int  # this generation's own WAL starts here; below it is `base`'s
    base_branch: str  # "" for main's first generation
    base_gen: int
    database_id: str
    database: str  # names, for restores of databases that no longer exist
    branch: str
    created: float
    # When the WAL at start_lsn was written (the fork or rewind point's time):
    # the generation it continues is history only up to then.
    start_time: float = 0.0

    @property
    def key(self) -> tuple[str, int]:
        return self.branch_id, self.gen

    @property
    def base(self) -> tuple[str, int] | None:
        return (self.base_branch, self.base_gen) if self.base_branch else None


@dataclass(frozen=True)
class WalObject:
    name: str
    path: Path
    mtime: float
    size: int  # compressed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, mtime: float | None = None) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.rename(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class WalRepository:
    def __init__(self, backup_dir: Path) -> None:
        self.root = backup_dir / "wal"

    def dir(self, branch_id: str, gen: int) -> Path:
        return self.root / branch_id / f"g{gen}"

    # --- generations -----------------------------------------------------------

    def begin(self, generation: Generation) -> None:
        """Records a generation. Once it holds WAL its record stays; before that a
        rewind that failed half-way may have left one, which this replaces."""
        d = self.dir(generation.branch_id, generation.gen)
        d.mkdir(parents=True, exist_ok=True)
        if not (d / META).exists() or not self.objects(generation.branch_id, generation.gen):
            _atomic_write(d / META, json.dumps(asdict(generation), sort_keys=True).encode())

    def generation(self, branch_id: str, gen: int) -> Generation | None:
        try:
            data = json.loads((self.dir(branch_id, gen) / META).read_text())
        except (OSError, ValueError):
            return None
        return Generation(**data)

    def generations(self, branch_id: str) -> list[Generation]:
        found = []
        for d in (self.root / branch_id).glob("g*"):
            if d.name[1:].isdigit():
                g = self.generation(branch_id, int(d.name[1:]))
                if g is not None:
                    found.append(g)
        return sorted(found, key=lambda g: g.gen)

    def branches(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()) if self.root.is_dir() else []

    def chain(self, branch_id: str, gen: int) -> list[Generation]:
        """The generation and every one it continues, newest first."""
        out: list[Generation] = []
        key: tuple[str, int] | None = (branch_id, gen)
        while key is not None and len(out) < 10_000:
            g = self.generation(*key)
            if g is None:
                break
            out.append(g)
            key = g.base
        return out

    # --- objects ---------------------------------------------------------------

    def store(self, branch_id: str, gen: int, name: str, data: bytes, mtime: float) -> bool:
        """Stores one WAL file; False if that same file was stored already."""
        path = self.dir(branch_id, gen) / (name + SUFFIX)
        if path.exists():
            if self.read(path) == data:
                return False
            raise WalConflict(f"archived WAL {branch_id}/g{gen}/{name} exists with other "
                              "content; the new copy stays in the spool")
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, zstandard.ZstdCompressor(level=LEVEL).compress(data), mtime)
        return True

    def objects(self, branch_id: str, gen: int) -> dict[str, WalObject]:
        out: dict[str, WalObject] = {}
        d = self.dir(branch_id, gen)
        if not d.is_dir():
            return out
        with os.scandir(d) as entries:
            for e in entries:
                if e.name.endswith(SUFFIX) and not e.name.startswith("."):
                    st = e.stat()
                    name = e.name[: -len(SUFFIX)]
                    out[name] = WalObject(name, Path(e.path), st.st_mtime, st.st_size)
        return out

    def files(self, branch_id: str) -> list[tuple[str, Path]]:
        """Every file of a branch's archive, as (path below the archive, path): each
        generation's record first, then its WAL files, oldest generation first."""
        out: list[tuple[str, Path]] = []
        for g in self.generations(branch_id):
            d = self.dir(branch_id, g.gen)
            names = sorted(p.name for p in d.iterdir()
                           if p.name.endswith(SUFFIX) and not p.name.startswith("."))
            out += [(f"{branch_id}/g{g.gen}/{name}", d / name) for name in [META, *names]]
        return out

    def adopt(self, rel: str, data: bytes, mtime: float) -> bool:
        """Stores a file of another host's archive at the same place (a moved
        database's): `rel` as files() gives it, `data` as stored there. False if a
        file of that name is here already: nothing here is ever rewritten."""
        if not _ADOPTABLE.fullmatch(rel):
            raise ValueError(f"{rel[:80]!r} is not a file of an archive")
        path = self.root / rel
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data, mtime)
        return True

    @staticmethod
    def read(path: Path) -> bytes:
        return zstandard.ZstdDecompressor().decompress(path.read_bytes())
