"""Reading the off-host repository: listing backups across hosts, and fetching
repository objects into a local cache repository to restore from.

The cache is an ordinary repository (cygnet/backup), so the existing restore
code reads it and re-hashes every block it writes. Every fetched object is
decrypted and authenticated (AES-GCM) before it gets its final name; one that
fails is refused as CorruptRepository (DATA_LOSS) naming the object.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cygnet.backup import BackupInfo, CorruptRepository, init_repository
from cygnet.backup.errors import BackupNotFound
from cygnet.backup.fsutil import fsync_dir
from cygnet.backup.manifest import MAGIC, read_manifest
from cygnet.backup.models import check_backup_id
from cygnet.backup.packs import decode_idx
from cygnet.blocks import DIGEST_SIZE, DedupIndex
from cygnet.offsite.config import HOSTS
from cygnet.offsite.crypto import CHUNK, TAG, Decryptor, Keyring, Undecryptable, decrypt_stream
from cygnet.offsite.store import NoSuchObject, ObjectStore
from cygnet.wal import repo as wal_repo

_REL = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def hosts(store: ObjectStore) -> list[str]:
    """Hosts with a prefix in the bucket."""
    return sorted(p["Prefix"][len(HOSTS):].rstrip("/")
                  for p in store.list(HOSTS, delimiter="/") if "Prefix" in p)


def list_remote(store: ObjectStore, keyring: Keyring) -> list[tuple[str, BackupInfo]]:
    """(host, backup) of every manifest in the bucket, oldest first. Reads only each
    manifest's first encrypted chunk."""
    found = []
    for host in hosts(store):
        prefix = f"{HOSTS}{host}/backups/"
        for obj in store.list(prefix):
            key = obj.get("Key", "")
            if key.endswith(".manifest"):
                found.append((host, _remote_info(store, keyring, key, int(obj["Size"]))))
    return sorted(found, key=lambda hi: (hi[1].created_at, hi[1].backup_id))


def _remote_info(store: ObjectStore, keyring: Keyring, key: str, size: int) -> BackupInfo:
    head = store.get(key, f"bytes=0-{100 + CHUNK + TAG}")
    try:
        box = Decryptor.open(keyring, key, head)
        body = head[box.header_len:box.header_len + CHUNK + TAG]
        plain = box.chunk(0, body, box.header_len + len(body) >= size)
        lines = plain.split(b"\n", 2)
        return BackupInfo.from_json(json.loads(lines[1]))
    except Undecryptable as exc:
        raise _damaged(store, key, str(exc)) from None
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise _damaged(store, key, f"malformed manifest header: {exc}") from None


def _damaged(store: ObjectStore, key: str, why: str) -> CorruptRepository:
    where = f"{store.bucket}/{key}"
    return CorruptRepository(f"off-host object {where} is damaged; nothing was restored",
                             [f"{where}: {why}"])


def find_backup(store: ObjectStore, backup_id: str) -> str:
    """The host whose prefix holds the backup (the newest host name if several do)."""
    check_backup_id(backup_id)
    holders = [h for h in hosts(store)
               if any(True for _ in store.list(f"{HOSTS}{h}/backups/{backup_id}.manifest"))]
    if not holders:
        raise BackupNotFound(f"no backup {backup_id} in the off-host repository "
                             f"(bucket {store.bucket})")
    return holders[-1]


def list_objects(store: ObjectStore, host: str, under: str = "") -> dict[str, int]:
    """The repository objects of `host`'s prefix below `under` (e.g. 'wal/BRANCH_ID/'):
    path in the repository -> stored (encrypted) size."""
    prefix = f"{HOSTS}{host}/"
    return {o["Key"][len(prefix):]: int(o["Size"]) for o in store.list(prefix + under)
            if "Key" in o}


def fetch_objects(store: ObjectStore, keyring: Keyring, host: str, rels: Iterable[str],
                  repo_dir: Path, workers: int = 8) -> list[Path]:
    """Makes these repository objects (paths relative to a repository, such as
    'packs/00..01.pack' or 'wal/...') of `host`'s off-host prefix available in the
    local repository repo_dir; objects already there are kept. Returns their paths."""
    repo = init_repository(repo_dir)
    todo = []
    for rel in rels:
        if not _REL.fullmatch(rel) or ".." in rel.split("/"):
            raise CorruptRepository(f"not a repository object name: {rel!r}")
        if not (repo.root / rel).exists():
            todo.append(rel)
    # Each worker holds two 1 MiB chunks at most: fetching never buffers whole packs.
    with ThreadPoolExecutor(workers, thread_name_prefix="offsite-fetch") as pool:
        list(pool.map(lambda rel: _fetch_one(store, keyring, host, rel, repo.root), todo))
    return [repo.root / rel for rel in rels]


def _fetch_one(store: ObjectStore, keyring: Keyring, host: str, rel: str, root: Path) -> None:
    key = f"{HOSTS}{host}/{rel}"
    try:
        read, metadata = store.reader(key)
    except NoSuchObject:
        raise CorruptRepository(f"off-host object {store.bucket}/{key} is missing; nothing was "
                                "restored", [f"{store.bucket}/{key}: missing"]) from None
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = root / "tmp" / f"{dest.name}.{secrets.token_hex(4)}.tmp"
    try:
        # Decrypted a chunk at a time; the name is given only once all of it authenticated.
        with open(tmp, "wb") as f:
            for plain in decrypt_stream(keyring, key, read):
                f.write(plain)
            f.flush()
            os.fsync(f.fileno())
        _keep_mtime(tmp, metadata)
        os.replace(tmp, dest)
    except Undecryptable as exc:
        raise _damaged(store, key, str(exc)) from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dest.parent)


def _keep_mtime(path: Path, metadata: dict[str, str]) -> None:
    """Gives a fetched copy its original's mtime, where the upload recorded it."""
    try:
        mtime = float(metadata.get("cygnet-mtime", ""))
    except ValueError:
        return  # uploaded before mtimes were recorded: the fetch time stays
    os.utime(path, (mtime, mtime))


def fetch_wal(store: ObjectStore, keyring: Keyring, host: str, branch_id: str,
              repo_dir: Path) -> list[str]:
    """Fetches a branch's archived WAL and its ancestors' (every generation it
    continues, by generation.json's base) from `host`'s prefix into the local
    repository repo_dir, for a point-in-time restore there. Returns the branch ids
    fetched, the branch's first. Recovery then chooses segments by LSN range."""
    fetched: list[str] = []
    todo = [branch_id]
    while todo and len(fetched) < 10_000:
        branch = todo.pop()
        if branch in fetched:
            continue
        fetched.append(branch)
        objects = sorted(list_objects(store, host, f"wal/{branch}/"))
        metas = [rel for rel in objects if rel.endswith("/" + wal_repo.META)]
        fetch_objects(store, keyring, host, metas, repo_dir)  # small: read first
        fetch_objects(store, keyring, host, [r for r in objects if r not in metas], repo_dir)
        wal = wal_repo.WalRepository(repo_dir)
        for generation in wal.generations(branch):
            if generation.base_branch:
                todo.append(generation.base_branch)
    return fetched


def fetch_backup(store: ObjectStore, keyring: Keyring, host: str, backup_id: str,
                 repo_dir: Path) -> Path:
    """Fetches a backup's manifest (and its base), the pack indexes and the packs its
    blocks live in, into the local repository repo_dir; returns repo_dir."""
    check_backup_id(backup_id)
    fetch_objects(store, keyring, host, ["cygnet-backup.json"], repo_dir)
    manifest = f"backups/{backup_id}.manifest"
    fetch_objects(store, keyring, host, [manifest], repo_dir)
    repo = init_repository(repo_dir)
    base = _base_of(repo.root / manifest)
    if base:
        fetch_objects(store, keyring, host, [f"backups/{base}.manifest"], repo_dir)
    prefix = f"{HOSTS}{host}/"
    idx = [o["Key"][len(prefix):] for o in store.list(prefix + "packs/")
           if o.get("Key", "").endswith(".idx")]
    fetch_objects(store, keyring, host, idx, repo_dir)
    needed = _packs_needed(repo_dir, backup_id, idx)
    fetch_objects(store, keyring, host, [f"packs/{p:016x}.pack" for p in sorted(needed)],
                  repo_dir)
    return repo_dir


def _base_of(path: Path) -> str:
    with open(path, "rb") as f:
        if f.readline() != MAGIC:  # version 1 manifests have no base
            return ""
        f.readline()
        link = json.loads(f.readline() or b"{}")
    return str(link.get("base", "")) if isinstance(link, dict) else ""


def _packs_needed(repo_dir: Path, backup_id: str, idx: list[str]) -> set[int]:
    repo = init_repository(repo_dir)
    manifest = read_manifest(repo, backup_id)
    index = DedupIndex()
    for rel in idx:
        index.update(decode_idx((repo.root / rel).read_bytes(), rel))
    needed: set[int] = set()
    digests = manifest.digests
    for off in range(0, len(digests), DIGEST_SIZE):
        loc = index.get(digests[off:off + DIGEST_SIZE])
        if loc is not None:  # a missing block is restore's to report
            needed.add(loc[0])
    return needed
