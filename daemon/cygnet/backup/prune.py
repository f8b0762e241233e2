"""prune: delete backups, then the blocks no remaining backup references.

Order is what makes a crash at any point safe: surviving delta manifests
whose base is to go are first rewritten (same id, atomic rename) against
another base or in full, then manifests go (leaving at worst unreferenced
blocks), surviving blocks of partly-dead packs are copied into new committed
packs before the old packs are unlinked (leaving at worst a block stored
twice, which the next prune drops).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from cygnet.backup import pruned
from cygnet.backup.errors import BackupNotFound
from cygnet.backup.manifest import read_header, read_info, read_manifest, write_manifest
from cygnet.backup.models import PruneReport, check_backup_id
from cygnet.backup.packs import DEFAULT_PACK_SIZE, FrameCache, PackWriter, read_idx
from cygnet.backup.repo import Repository, open_repository
from cygnet.blocks import DIGEST_SIZE, RECORD_SIZE, BlockLocation, DedupIndex, iter_records
from cygnet.errors import InvalidArgument


def prune(
    repo: str | os.PathLike[str],
    *,
    keep_last: int | None = None,
    delete: Iterable[str] = (),
    pack_size: int = DEFAULT_PACK_SIZE,
    lock_timeout: float = 0.0,
) -> PruneReport:
    """Deletes the backups in `delete` and all but the newest `keep_last`, then
    removes blocks no remaining backup uses. With neither, only garbage
    collects. A block referenced by a remaining backup is never removed."""
    if keep_last is not None and keep_last < 0:
        raise InvalidArgument("keep_last", "must be >= 0")
    repository = open_repository(repo)
    with repository.writer_lock(lock_timeout), repository.reader_lock(True, lock_timeout):
        repository.clean_garbage()
        doomed = _select(repository, keep_last, [check_backup_id(b) for b in delete])
        _rebase_dependents(repository, set(doomed))
        pruned.unlink_recorded(repository.root, [repository.manifest_path(b) for b in doomed])
        report = _collect(repository, pack_size)
    return PruneReport(doomed, *report)


def _select(repo: Repository, keep_last: int | None, delete: list[str]) -> list[str]:
    ids = repo.backup_ids()
    unknown = sorted(set(delete) - set(ids))
    if unknown:
        raise BackupNotFound(f"no backups {', '.join(unknown)}")
    doomed = set(delete)
    if keep_last is not None:
        by_age = sorted(ids, key=lambda b: (read_info(repo, b).created_at, b))
        doomed.update(by_age[: max(0, len(by_age) - keep_last)])
    return sorted(doomed)


def _rebase_dependents(repo: Repository, doomed: set[str]) -> None:
    """Rewrites the surviving deltas based on a doomed backup, newest first:
    the first becomes full (unless another surviving base fits) and is then
    a candidate base for the rest. Every rewrite is complete on disk before
    the next and before any base is deleted, so a crash leaves each backup
    either as it was or rewritten, and readable either way."""
    if not doomed:
        return
    dependents = []
    for backup_id in reversed(repo.backup_ids()):
        if backup_id not in doomed and read_header(repo, backup_id)[1] in doomed:
            dependents.append(backup_id)
    for backup_id in dependents:
        write_manifest(repo, read_manifest(repo, backup_id), exclude=doomed)


def _referenced(repo: Repository) -> DedupIndex:
    """Digests used by remaining backups. An unreadable manifest aborts the
    prune (CorruptRepository): without it we cannot know what is in use."""
    referenced = DedupIndex()
    for backup_id in repo.backup_ids():
        digests = read_manifest(repo, backup_id).digests
        for off in range(0, len(digests), DIGEST_SIZE):
            referenced.insert(digests[off : off + DIGEST_SIZE], 0, 0, 0)
    return referenced


def _collect(repo: Repository, pack_size: int) -> tuple[int, int, int, int]:
    referenced = _referenced(repo)
    writer = PackWriter(repo, pack_size)
    dead: list[int] = []  # packs to unlink once the survivors are committed
    rewritten = removed = freed = 0
    for pack_id in repo.pack_ids():
        records = read_idx(repo, pack_id)
        digests = b"".join(d for d, _ in iter_records(records))
        unused = set(referenced.missing(digests))
        for i, (digest, _) in enumerate(iter_records(records)):
            if i not in unused:
                referenced.remove(digest)  # claimed: a second copy elsewhere is unused
        if not unused:
            continue
        dead.append(pack_id)
        freed += repo.pack_path(pack_id).stat().st_size
        removed += len(unused)
        if len(unused) < len(records) // RECORD_SIZE:
            rewritten += 1
            _copy_survivors(repo, pack_id, records, unused, writer)
    try:
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    freed -= sum(repo.pack_path(p).stat().st_size for p in writer.packs_written)
    # The .idx goes first: a pack without one is garbage, never a half-read index.
    pruned.unlink_recorded(repo.root, [repo.idx_path(p) for p in dead])
    pruned.unlink_recorded(repo.root, [repo.pack_path(p) for p in dead])
    return len(dead) - rewritten, rewritten, removed, freed


def _copy_survivors(
    repo: Repository, pack_id: int, records: bytes, unused: set[int], writer: PackWriter
) -> None:
    """Copies the live blocks of a partly dead pack, frame by frame: a frame
    whose indexed blocks all live is copied as it is; one that lost some is
    decompressed, and its survivors are checked and compressed anew."""
    frames: dict[int, list[tuple[bool, bytes, BlockLocation]]] = {}
    for i, (digest, loc) in enumerate(iter_records(records)):
        frames.setdefault(loc.offset, []).append((i not in unused, digest, loc))
    cache = FrameCache()
    with open(repo.pack_path(pack_id), "rb") as f:

        def read(at: BlockLocation) -> bytes:
            return os.pread(f.fileno(), at.length, at.offset)

        for members in frames.values():
            live = [(digest, loc) for alive, digest, loc in members if alive]
            if len(live) == len(members):
                writer.add_group(read(live[0][1]), [(loc.slot, d) for d, loc in live])
            elif live:
                where = f"{repo.pack_path(pack_id).name}@{live[0][1].offset}"
                writer.add_blocks([(d, cache.block(d, loc, read, where)) for d, loc in live])
