"""Block hashing throughput: cygnet._native.hash_file vs Python baselines.

Hashes every 8 KiB block of one random-content file that is warm in the page
cache (it is read once before timing), so the figures measure CPU and
memory, not the disk. hash_file splits a file of 32 MiB or more among one
thread per CPU; the Python baselines are one thread, as Python code is.
Prints one JSON object. Baselines, same run, same file:
  native_one_thread  the C kernel on one thread (4 MiB reads + hash_bytes), for scale
  python_xxhash_8k   the reference: f.read(8192) + xxhash.xxh3_128_digest per block
  python_xxhash_4m   4 MiB reads, xxh3_128_digest over memoryview slices
  hashlib_sha256     f.read(8192) + hashlib.sha256 per block
  hashlib_blake2b    f.read(8192) + hashlib.blake2b(digest_size=16) per block

    .venv/bin/python benchmarks/bench_hashing.py [--size-mb 1024] [--small] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import xxhash

from cygnet.blocks import BLOCK_SIZE, hash_bytes, hash_file, reference


def native_one_thread(path: Path) -> bytes:
    """The C kernel on one thread: 4 MiB reads, hash_bytes on each."""
    out: list[bytes] = []
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(4 << 20):
            out.append(hash_bytes(chunk))
    return b"".join(out)


def python_xxhash_4m(path: Path) -> bytes:
    out: list[bytes] = []
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            view = memoryview(chunk)
            out.extend(
                xxhash.xxh3_128_digest(view[i : i + BLOCK_SIZE])
                for i in range(0, len(view), BLOCK_SIZE)
            )
    return b"".join(out)


class Digester(Protocol):
    def digest(self) -> bytes: ...


def per_block_hashlib(make: Callable[[bytes], Digester]) -> Callable[[Path], bytes]:
    def run(path: Path) -> bytes:
        out = []
        with open(path, "rb") as f:
            while block := f.read(BLOCK_SIZE):
                out.append(make(block).digest())
        return b"".join(out)

    return run


def best_seconds(fn: Callable[[Path], bytes], path: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(path)
        best = min(best, time.perf_counter() - start)
    return best


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for off in range(0, size, 4 << 20):
            f.write(os.urandom(min(4 << 20, size - off)))
    with open(path, "rb") as f:  # warm the page cache
        while f.read(4 << 20):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--small", action="store_true", help="64 MiB, one repeat: a smoke run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the test file")
    args = parser.parse_args()
    size = (64 if args.small else args.size_mb) << 20
    repeat = 1 if args.small else args.repeat
    candidates: dict[str, Callable[[Path], bytes]] = {
        "native_hash_file": hash_file,
        "native_one_thread": native_one_thread,
        "python_xxhash_8k": reference.hash_file,
        "python_xxhash_4m": python_xxhash_4m,
        "hashlib_sha256": per_block_hashlib(hashlib.sha256),
        "hashlib_blake2b": per_block_hashlib(lambda b: hashlib.blake2b(b, digest_size=16)),
    }
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "data.bin"
        make_file(path, size)
        assert hash_file(path) == reference.hash_file(path)
        seconds = {name: best_seconds(fn, path, repeat) for name, fn in candidates.items()}
    native = seconds["native_hash_file"]
    print(
        json.dumps(
            {
                "benchmark": "block_hashing",
                "bytes": size,
                "block_size": BLOCK_SIZE,
                "repeat": repeat,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "gb_per_s": {name: round(size / s / 1e9, 3) for name, s in seconds.items()},
                "native_speedup": {
                    name: round(s / native, 2)
                    for name, s in seconds.items()
                    if name != "native_hash_file"
                },
                "targets": {
                    "native_gb_per_s>=2": size / native / 1e9 >= 2,
                    "speedup_vs_python_xxhash_8k>=10": seconds["python_xxhash_8k"] / native >= 10,
                    "speedup_vs_hashlib_sha256>=10": seconds["hashlib_sha256"] / native >= 10,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
