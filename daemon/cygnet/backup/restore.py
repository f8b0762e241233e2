"""restore: rebuild a backed-up tree, checking every block against its digest.

Nothing unverified is left behind: the manifest checksum is checked and every
needed block is located before anything is written, each block is re-hashed
as it is read, and on any failure the partial tree is removed before the
CorruptRepository error propagates.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from cygnet.backup.errors import CorruptRepository, RestoreTargetNotEmpty
from cygnet.backup.manifest import Entry, Manifest, read_manifest
from cygnet.backup.models import ProgressFn, RestoreInfo, check_backup_id
from cygnet.backup.packs import BlockReader, load_index
from cygnet.backup.repo import open_repository
from cygnet.blocks import DIGEST_SIZE, BlockLocation, DedupIndex


def restore(
    repo: str | os.PathLike[str],
    backup_id: str,
    dest_dir: str | os.PathLike[str],
    *,
    lock_timeout: float = 0.0,
    progress: ProgressFn | None = None,
) -> RestoreInfo:
    """Restores a backup into dest_dir, which must be absent or empty.

    File modes and mtimes are restored; ownership is the caller's."""
    check_backup_id(backup_id)
    repository = open_repository(repo)
    dest = Path(dest_dir)
    started = time.monotonic()
    with repository.reader_lock(timeout=lock_timeout):
        manifest = read_manifest(repository, backup_id)
        index, _ = load_index(repository)
        _check_blocks_present(manifest, index)
        created = _prepare_dest(dest)
        reader = BlockReader(repository)
        try:
            written = _write_tree(manifest, dest, index, reader, progress)
        except BaseException:
            _remove_partial(dest, created)
            raise
        finally:
            reader.close()
    return RestoreInfo(backup_id, manifest.info.file_count, written, time.monotonic() - started)


def _check_blocks_present(manifest: Manifest, index: DedupIndex) -> None:
    missing = index.missing(manifest.digests)
    if missing:
        sample = [manifest.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE].hex() for i in missing]
        raise CorruptRepository(
            f"backup {manifest.info.backup_id}: {len(missing)} blocks are missing",
            [f"missing block {d}" for d in sample[:20]],
        )


def _prepare_dest(dest: Path) -> bool:
    """Returns whether dest was created here (and so may be removed on failure)."""
    try:
        dest.mkdir(mode=0o700)
        return True
    except FileExistsError:
        if not dest.is_dir() or any(dest.iterdir()):
            raise RestoreTargetNotEmpty(f"{dest} exists and is not an empty directory") from None
        return False


def _remove_partial(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _write_tree(
    manifest: Manifest,
    dest: Path,
    index: DedupIndex,
    reader: BlockReader,
    progress: ProgressFn | None = None,
) -> int:
    digests = dict((e.path, d) for e, d in manifest.files())
    written = files = 0
    dirs = {"."}
    for entry in manifest.entries:
        path = dest / _checked_path(entry, dirs)
        if entry.kind == "dir":
            path.mkdir(mode=0o700, exist_ok=True)  # final mode once its contents exist
        elif entry.kind == "symlink":
            os.symlink(entry.target, path)
        else:
            written += _write_file(path, entry, digests[entry.path], index, reader)
            files += 1
            if progress is not None:
                progress(files, written)
    # Directory modes and mtimes last (deepest first): writing into them changes mtime.
    for entry in reversed(manifest.entries):
        if entry.kind == "dir":
            path = dest / entry.path
            os.chmod(path, entry.mode)
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
    return written


def _checked_path(entry: Entry, dirs: set[str]) -> str:
    """Refuses paths that would leave dest: each parent must be a restored directory."""
    parent, _, name = entry.path.rpartition("/")
    if entry.path == "." and entry.kind == "dir":
        return entry.path
    if name in ("", ".", "..") or (parent or ".") not in dirs:
        raise CorruptRepository(f"manifest entry has an unsafe path: {entry.path!r}")
    if entry.kind == "dir":
        dirs.add(entry.path)
    return entry.path


def _write_file(
    path: Path, entry: Entry, digests: bytes, index: DedupIndex, reader: BlockReader
) -> int:
    with open(path, "wb", buffering=1 << 20) as f:
        for off in range(0, len(digests), DIGEST_SIZE):
            digest = digests[off : off + DIGEST_SIZE]
            loc = index.get(digest)
            assert loc is not None  # checked by _check_blocks_present
            f.write(reader.read(digest, BlockLocation(*loc)))
    os.chmod(path, entry.mode)
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
    return entry.size
