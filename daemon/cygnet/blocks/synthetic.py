"""Synthetic PostgreSQL-like data for tests and benchmarks.

Pages are what a heap page looks like to a block store: a random-content
part (tuples; random bytes are the incompressible worst case) and a zero
part (free space), the split varying per page. Every page is distinct, so
dedup only ever finds pages that really are unchanged.
"""

from __future__ import annotations

import random
from pathlib import Path

from cygnet.blocks import BLOCK_SIZE

SEGMENT_PAGES = 131072  # 1 GiB segments, as PostgreSQL splits relations


def page(rng: random.Random) -> bytes:
    used = rng.randrange(BLOCK_SIZE // 4, BLOCK_SIZE + 1)
    return rng.randbytes(used) + bytes(BLOCK_SIZE - used)


def pages(rng: random.Random, count: int) -> bytes:
    return b"".join(page(rng) for _ in range(count))


def make_pgdata(root: Path, total_bytes: int, seed: int = 0, db_oid: int = 5) -> list[Path]:
    """A data-directory-shaped tree of about total_bytes; returns its relation files.

    Relations get sizes from a few pages to a large share of the total, with
    _fsm/_vm forks, as under base/<db_oid>/, plus a few small non-relation files."""
    rng = random.Random(seed)
    db = root / "base" / str(db_oid)
    db.mkdir(parents=True, exist_ok=True)
    (root / "global").mkdir(exist_ok=True)
    (root / "pg_wal").mkdir(exist_ok=True)
    (root / "PG_VERSION").write_text("16\n")
    (root / "postgresql.conf").write_text("# synthetic\nshared_buffers = 128MB\n")
    files = []
    remaining = max(1, total_bytes // BLOCK_SIZE)
    relfilenode = 16384
    while remaining > 0:
        count = min(remaining, rng.choice([3, 20, 200, max(1, remaining // 3)]))
        files.extend(write_relation(db, relfilenode, count, rng))
        remaining -= count
        relfilenode += rng.randrange(1, 5)
    files.extend(write_relation(root / "global", 1260, 2, rng))
    return files


def write_relation(directory: Path, relfilenode: int, count: int, rng: random.Random) -> list[Path]:
    """Main fork (split into 1 GiB segments) plus fsm and vm forks."""
    written = []
    for seg in range(0, max(count, 1), SEGMENT_PAGES):
        name = str(relfilenode) + (f".{seg // SEGMENT_PAGES}" if seg else "")
        path = directory / name
        with open(path, "wb") as f:
            for start in range(seg, min(count, seg + SEGMENT_PAGES), 1024):
                f.write(pages(rng, min(1024, count - start)))
        written.append(path)
    for fork, n in (("_fsm", 3), ("_vm", 1)):
        path = directory / f"{relfilenode}{fork}"
        path.write_bytes(pages(rng, n))
        written.append(path)
    return written


def change_pages(files: list[Path], fraction: float, seed: int = 1) -> int:
    """Rewrites about `fraction` of all pages of files in place; returns how many."""
    rng = random.Random(seed)
    changed = 0
    for path in files:
        npages = path.stat().st_size // BLOCK_SIZE
        picks = [i for i in range(npages) if rng.random() < fraction]
        if not picks:
            continue
        with open(path, "r+b") as f:
            for i in picks:
                f.seek(i * BLOCK_SIZE)
                f.write(page(rng))
        changed += len(picks)
    return changed
