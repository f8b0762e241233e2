"""Backup throughput and incremental storage of the dedup block repository.

On a synthetic data directory (distinct 8 KiB pages: random tuple bytes plus
zero free space, so they compress about 2:1 like real heap pages) it measures:
  cat_gb_per_s        `cat` of all files to /dev/null, warm cache: the I/O baseline
  full_backup         first backup of the tree into an empty repository
  branch_backups      ten "branches": each changes 1% of pages of the base tree,
                      is backed up, and is reverted (so every branch is 1% off base)
  incremental_ratio   bytes written by the first branch backup / full backup
  ten_branches_ratio  all pack bytes after base + ten branches / full backup
  restore, verify     throughput of restoring the base backup and verifying all
Prints one JSON object.

    .venv/bin/python benchmarks/bench_backup.py [--size-mb 1024] [--small] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from cygnet import backup
from cygnet.blocks import BLOCK_SIZE
from cygnet.blocks.synthetic import make_pgdata, page


def timed_cat(files: list[Path]) -> float:
    best = float("inf")
    for _ in range(2):  # the first run warms the page cache
        start = time.perf_counter()
        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def branch_change(files: list[Path], fraction: float, seed: int) -> list[tuple[Path, int, bytes]]:
    """Rewrites `fraction` of pages; returns what is needed to revert them."""
    rng = random.Random(seed)
    undo = []
    for path in files:
        with open(path, "r+b") as f:
            for i in range(path.stat().st_size // BLOCK_SIZE):
                if rng.random() < fraction:
                    f.seek(i * BLOCK_SIZE)
                    undo.append((path, i, f.read(BLOCK_SIZE)))
                    f.seek(i * BLOCK_SIZE)
                    f.write(page(rng))
    return undo


def revert(undo: list[tuple[Path, int, bytes]]) -> None:
    for path, i, old in undo:
        with open(path, "r+b") as f:
            f.seek(i * BLOCK_SIZE)
            f.write(old)


def pack_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "packs").glob("*.pack"))


def run(root: Path, size: int) -> dict[str, object]:
    src, repo = root / "pgdata", root / "repo"
    files = [p for p in make_pgdata(src, size) if p.stat().st_size]
    logical = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    cat_s = timed_cat(sorted(p for p in src.rglob("*") if p.is_file()))
    start = time.perf_counter()
    full = backup.create_backup(repo, src, {"database": "bench", "branch": "main"})
    full_s = time.perf_counter() - start
    branches: list[dict[str, float]] = []
    for k in range(10):
        undo = branch_change(files, 0.01, seed=k)
        start = time.perf_counter()
        info = backup.create_backup(repo, src, {"database": "bench", "branch": f"b{k}"})
        seconds = time.perf_counter() - start
        revert(undo)
        branches.append(
            {
                "changed_pages": len(undo),
                "new_blocks": info.new_blocks,
                "new_bytes": info.new_bytes,
                "seconds": round(seconds, 3),
            }
        )
    start = time.perf_counter()
    backup.restore(repo, full.backup_id, root / "restored")
    restore_s = time.perf_counter() - start
    start = time.perf_counter()
    report = backup.verify(repo)
    verify_s = time.perf_counter() - start
    assert report.ok, report.issues
    total = pack_bytes(repo)
    first_branch = int(branches[0]["new_bytes"])
    return {
        "benchmark": "backup",
        "logical_bytes": logical,
        "cpus": os.cpu_count(),
        "cat_gb_per_s": round(logical / cat_s / 1e9, 3),
        "full_backup": {
            "seconds": round(full_s, 3),
            "gb_per_s": round(logical / full_s / 1e9, 3),
            "new_bytes": full.new_bytes,
            "compression_ratio": round(logical / full.new_bytes, 2),
            "slowdown_vs_cat": round(full_s / cat_s, 2),
        },
        "branch_backups": branches,
        "incremental_ratio": round(first_branch / full.new_bytes, 4),
        "ten_branches_ratio": round(total / full.new_bytes, 4),
        "restore_gb_per_s": round(logical / restore_s / 1e9, 3),
        "verify_gb_per_s": round(report.bytes_checked / verify_s / 1e9, 3),
        "targets": {
            "incremental_ratio<=0.03": first_branch <= 0.03 * full.new_bytes,
            "ten_branches_ratio<=1.2": total <= 1.2 * full.new_bytes,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--small", action="store_true", help="64 MiB: a smoke run")
    parser.add_argument("--dir", type=Path, default=None, help="where to build data and repo")
    args = parser.parse_args()
    size = (64 if args.small else args.size_mb) << 20
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(json.dumps(run(Path(tmp), size), indent=2))


if __name__ == "__main__":
    main()
