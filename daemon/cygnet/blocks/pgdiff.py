"""Which 8 KiB pages of which relations differ between two PostgreSQL data dirs.

Relation files live at base/<db oid>/<relfilenode>, global/<relfilenode>
(shared catalogs, database oid 0) and pg_tblspc/<spc oid>/<version dir>/<db
oid>/<relfilenode>, with forks as <relfilenode>_fsm/_vm/_init and 1 GiB
segments as <name>.1, .2... Changed pages of a fork are summed over its
segments. The caller maps (database oid, relfilenode) to schema.table with
SQL (pg_class.relfilenode / pg_relation_filenode(), 0 meaning a mapped
catalog).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cygnet.blocks import DIGEST_SIZE, diff_digests, hash_file

PG_DEFAULT, PG_GLOBAL = 1663, 1664  # oids of the built-in tablespaces
_REL_FILE = re.compile(r"(\d+)(?:_(fsm|vm|init))?(?:\.(\d+))?")


class RelFileKey(NamedTuple):
    db_oid: int
    relfilenode: int


@dataclass
class RelationChange:
    """Pages of one relation that differ; 'main' is the table or index itself."""

    db_oid: int
    relfilenode: int
    tablespace_oid: int
    main_changed_pages: int = 0
    main_pages_before: int = 0
    main_pages_after: int = 0
    fsm_changed_pages: int = 0
    vm_changed_pages: int = 0
    init_changed_pages: int = 0

    @property
    def status(self) -> str:
        if not self.main_pages_before and self.main_pages_after:
            return "added"
        if self.main_pages_before and not self.main_pages_after:
            return "removed"
        return "modified"


@dataclass
class DataDirDiff:
    relations: dict[RelFileKey, RelationChange] = field(default_factory=dict)
    other_files: dict[str, int] = field(default_factory=dict)  # path -> changed blocks
    pages_compared: int = 0

    @property
    def main_changed_pages(self) -> int:
        return sum(r.main_changed_pages for r in self.relations.values())


class _RelFile(NamedTuple):
    key: RelFileKey
    tablespace_oid: int
    fork: str  # main, fsm, vm or init


def classify(relpath: str) -> _RelFile | None:
    """The relation a data-directory path belongs to, or None for other files."""
    parts = relpath.split("/")
    if len(parts) == 3 and parts[0] == "base" and parts[1].isdigit():
        spc, db, name = PG_DEFAULT, int(parts[1]), parts[2]
    elif len(parts) == 2 and parts[0] == "global":
        spc, db, name = PG_GLOBAL, 0, parts[1]
    elif len(parts) == 5 and parts[0] == "pg_tblspc" and parts[1].isdigit() and parts[3].isdigit():
        spc, db, name = int(parts[1]), int(parts[3]), parts[4]
    else:
        return None
    m = _REL_FILE.fullmatch(name)
    if m is None:
        return None
    return _RelFile(RelFileKey(db, int(m.group(1))), spc, m.group(2) or "main")


def diff_digest_maps(old: Mapping[str, bytes], new: Mapping[str, bytes]) -> DataDirDiff:
    """Aggregates per-file digest arrays (relative path -> digests) of two trees."""
    result = DataDirDiff()
    for relpath in sorted(old.keys() | new.keys()):
        before, after = old.get(relpath, b""), new.get(relpath, b"")
        changed = len(diff_digests(before, after))
        result.pages_compared += max(len(before), len(after)) // DIGEST_SIZE
        rel = classify(relpath)
        if rel is None:
            if changed:
                result.other_files[relpath] = changed
            continue
        change = result.relations.get(rel.key)
        if change is None:
            change = RelationChange(rel.key.db_oid, rel.key.relfilenode, rel.tablespace_oid)
        if rel.fork == "main":
            change.main_changed_pages += changed
            change.main_pages_before += len(before) // DIGEST_SIZE
            change.main_pages_after += len(after) // DIGEST_SIZE
        else:
            attr = f"{rel.fork}_changed_pages"
            setattr(change, attr, getattr(change, attr) + changed)
        result.relations[rel.key] = change
    result.relations = {k: v for k, v in result.relations.items() if _any_change(v)}
    return result


def _any_change(c: RelationChange) -> bool:
    return bool(
        c.main_changed_pages or c.fsm_changed_pages or c.vm_changed_pages or c.init_changed_pages
    )


def diff_data_dirs(
    old_dir: str | os.PathLike[str], new_dir: str | os.PathLike[str], *, workers: int = 0
) -> DataDirDiff:
    """Hashes both trees (in parallel: hash_file releases the GIL) and diffs them."""
    return diff_digest_maps(
        tree_digests(Path(old_dir), workers), tree_digests(Path(new_dir), workers)
    )


def tree_digests(root: Path, workers: int = 0) -> dict[str, bytes]:
    """Digest arrays of every regular file, following the pg_tblspc links."""
    files = dict(_walk(root, ""))
    tblspc = root / "pg_tblspc"
    if tblspc.is_dir():
        for link in sorted(tblspc.iterdir()):
            if link.is_symlink() and link.is_dir():
                files.update(_walk(link, f"pg_tblspc/{link.name}/"))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        digests = pool.map(hash_file, files.values())
        return dict(zip(files.keys(), digests, strict=True))


def _walk(root: Path, prefix: str) -> dict[str, Path]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                out[prefix + rel] = path
    return out
