"""Off-host upload of a full backup against a plain boto3 upload_file of the same bytes.

A repository gets one full backup of a synthetic data directory (8 KiB pages,
half of each random and half zeros, so zstd has work like on heap pages).
Then, interleaved, to the same SeaweedFS on loopback:

- cygnet: the off-host uploader's pass over the repository (AES-256-GCM,
  Content-MD5 and ETag checks, parallel multipart), under a fresh host prefix;
- boto3: `upload_file` of each of the repository's files, one after another,
  with boto3's default transfer settings (multipart, 10 threads per file).

Throughput is the repository's bytes over wall time. Target: cygnet >= 0.8x.
Then the way back, for restores: fetching the backup from the bucket into an
empty cache (decrypted, authenticated) against boto3 `download_file` of the
plain copies.

    .venv/bin/python -m benchmarks.bench_upload            # 1 GiB source, 3 rounds
    .venv/bin/python -m benchmarks.bench_upload --small    # 12 MiB, 1 round (the suite)
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit, log, summary
from cygnet import backup
from cygnet.offsite.config import OffsiteConfig
from cygnet.offsite.crypto import Keyring
from cygnet.offsite.fetch import fetch_backup
from cygnet.offsite.store import ObjectStore
from cygnet.offsite.sync import Uploader, scan
from tests.harness import WORK
from tests.s3_helpers import KEY, Seaweed

PAGE = 8192


def make_source(root: Path, size: int) -> None:
    """Files of 64 MiB at most (as relation segments are split at 1 GiB, smaller here)."""
    root.mkdir(parents=True)
    left, n = size, 0
    while left > 0:
        chunk = min(left, 64 << 20)
        pages = chunk // PAGE
        with open(root / f"rel{n}", "wb") as f:
            for _ in range(pages):
                f.write(os.urandom(PAGE // 2) + bytes(PAGE // 2))
        left -= chunk
        n += 1


def config(store: Seaweed, host: str) -> OffsiteConfig:
    keyring = Keyring.from_settings("k1", {"k1": base64.b64encode(KEY).decode()})
    return OffsiteConfig(endpoint=store.endpoint, bucket=store.bucket, host=host,
                         keyring=keyring, access_key_id=store.access_key,
                         secret_access_key=store.secret_key).check()


def run_cygnet(store: Seaweed, repo: Path, round_: int) -> float:
    uploader = Uploader(ObjectStore(config(store, f"bench-{round_}")), repo)
    uploader.start()
    started = time.perf_counter()
    uploader.run_pass()
    took = time.perf_counter() - started
    assert not uploader.pending()
    return took


def run_boto3(store: Seaweed, repo: Path, round_: int) -> float:
    client = store.client()
    files = [o.rel for o in scan(repo)]
    started = time.perf_counter()
    for rel in files:
        client.upload_file(str(repo / rel), store.bucket, f"plain-{round_}/{rel}")
    return time.perf_counter() - started


def run_fetch(store: Seaweed, repo: Path, work: Path, backup_id: str, round_: int
              ) -> tuple[float, float]:
    """Fetching the backup back for a restore (decrypting, authenticating) against boto3
    download_file of the plain copies, each into an empty directory."""
    conf = config(store, f"bench-{round_}")
    cache = work / f"fetch-{round_}"
    started = time.perf_counter()
    fetch_backup(ObjectStore(conf), conf.keyring, conf.host, backup_id, cache)
    ours = time.perf_counter() - started
    client = store.client()
    plain = work / f"plain-{round_}"
    started = time.perf_counter()
    for rel in [o.rel for o in scan(repo)]:
        (plain / rel).parent.mkdir(parents=True, exist_ok=True)
        client.download_file(store.bucket, f"plain-{round_}/{rel}", str(plain / rel))
    theirs = time.perf_counter() - started
    shutil.rmtree(cache)
    shutil.rmtree(plain)
    return ours, theirs


def measure(store: Seaweed, repo: Path, rounds: int, backup_id: str) -> dict[str, Any]:
    total = sum(o.size for o in scan(repo))
    times: dict[str, list[float]] = {"cygnet": [], "boto3_upload_file": []}
    for r in range(rounds):
        order = [("cygnet", run_cygnet), ("boto3_upload_file", run_boto3)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            took = fn(store, repo, r)
            times[name].append(took)
            log(f"round {r} {name}: {took:.2f} s, {total / took / 1e6:.0f} MB/s")
    fetches = [run_fetch(store, repo, repo.parent, backup_id, r) for r in range(rounds)]
    times["cygnet_fetch"] = [f for f, _ in fetches]
    times["boto3_download_file"] = [d for _, d in fetches]
    for name in ("cygnet_fetch", "boto3_download_file"):
        log(f"{name}: {summary(times[name])['p50']:.2f} s p50")
    mbps = {name: round(total / summary(t)["p50"] / 1e6, 1) for name, t in times.items()}
    return {"repository_bytes": total, "objects": len(scan(repo)),
            "seconds": {name: summary(t) for name, t in times.items()},
            "throughput_mb_s_p50": mbps,
            "ratio_cygnet_to_boto3": round(mbps["cygnet"] / mbps["boto3_upload_file"], 3),
            "target_ratio": 0.8,
            "ratio_fetch_to_boto3_download": round(
                mbps["cygnet_fetch"] / mbps["boto3_download_file"], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--small", action="store_true", help="12 MiB and one round (a smoke run)")
    p.add_argument("--size-mib", type=int, default=0)
    p.add_argument("--rounds", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    size = (args.size_mib or (12 if args.small else 1024)) << 20
    rounds = args.rounds or (1 if args.small else 3)
    work = Path(tempfile.mkdtemp(prefix="bench-upload-", dir=WORK.parent if not
                                 WORK.exists() else WORK))
    store = Seaweed(work / "s3")
    try:
        log(f"making a {size >> 20} MiB source and its full backup")
        make_source(work / "src", size)
        info = backup.create_backup(work / "repo", work / "src", {"database": "bench"})
        shutil.rmtree(work / "src")
        store.start()
        store.make_bucket(lock=False)
        result = {"benchmark": "upload", "small": args.small, "source_bytes": size,
                  "backup_new_bytes": info.new_bytes,
                  **measure(store, work / "repo", rounds, info.backup_id)}
    finally:
        store.stop()
        shutil.rmtree(work, ignore_errors=True)
    name = "upload_small" if args.small else "upload"
    emit(name, result, *([args.out] if args.out else []))


if __name__ == "__main__":
    main()
