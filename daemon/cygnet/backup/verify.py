"""verify: re-hash every stored block and check every manifest."""

from __future__ import annotations

import os

from cygnet.backup.errors import CorruptRepository
from cygnet.backup.manifest import read_manifest
from cygnet.backup.models import ProgressFn, VerifyIssue, VerifyReport
from cygnet.backup.packs import PACK_MAGIC, FrameCache, read_idx
from cygnet.backup.repo import Repository, open_repository
from cygnet.blocks import DIGEST_SIZE, DedupIndex, iter_records


def verify(
    repo: str | os.PathLike[str], *, lock_timeout: float = 0.0, progress: ProgressFn | None = None
) -> VerifyReport:
    """Checks the whole repository; report.ok is False if anything stored is damaged.

    Leftovers of an interrupted backup or prune are listed as garbage, not
    issues: they hold no data any backup needs."""
    repository = open_repository(repo)
    report = VerifyReport()
    with repository.reader_lock(timeout=lock_timeout):
        report.garbage = [str(p.relative_to(repository.root)) for p in repository.garbage()]
        good = DedupIndex()  # blocks that passed, for the manifest check
        for pack_id in repository.pack_ids():
            _verify_pack(repository, pack_id, good, report)
            if progress is not None:  # (packs done, uncompressed bytes re-hashed)
                progress(report.packs_checked, report.bytes_checked)
        referenced = DedupIndex()
        for backup_id in repository.backup_ids():
            _verify_manifest(repository, backup_id, good, referenced, report)
        report.unreferenced_blocks = len(referenced.missing(_digests_of(good)))
    return report


def _verify_pack(repo: Repository, pack_id: int, good: DedupIndex, report: VerifyReport) -> None:
    name = repo.pack_path(pack_id).name
    try:
        records = read_idx(repo, pack_id)
        data = repo.pack_path(pack_id).read_bytes()
    except (CorruptRepository, OSError) as e:
        report.issues.append(VerifyIssue("index", name, str(e)))
        return
    report.packs_checked += 1
    if not data.startswith(PACK_MAGIC):
        report.issues.append(VerifyIssue("pack", name, "bad pack header"))
    frames, view = FrameCache(), memoryview(data)
    bad = 0
    for digest, loc in iter_records(records):
        where = f"{name}@{loc.offset}"
        try:
            if loc.offset + loc.length > len(data):
                raise CorruptRepository(f"{where}: frame runs past the end of the pack")
            block = frames.block(
                digest, loc, lambda at: view[at.offset : at.offset + at.length], where
            )
        except CorruptRepository as e:
            bad += 1
            if bad <= 20:  # one broken pack must not flood the report
                report.issues.append(VerifyIssue("pack", name, str(e)))
            continue
        report.blocks_checked += 1
        report.bytes_checked += len(block)
        good.insert(digest, *loc)
    if bad > 20:
        report.issues.append(VerifyIssue("pack", name, f"{bad} damaged blocks in all"))


def _verify_manifest(
    repo: Repository, backup_id: str, good: DedupIndex, referenced: DedupIndex, report: VerifyReport
) -> None:
    name = repo.manifest_path(backup_id).name
    try:
        manifest = read_manifest(repo, backup_id)
    except (CorruptRepository, OSError) as e:
        # A delta whose base is missing or damaged lands here, under its own name.
        report.issues.append(VerifyIssue("manifest", name, str(e)))
        return
    report.manifests_checked += 1
    missing = good.missing(manifest.digests)
    if missing:
        report.issues.append(
            VerifyIssue(
                "missing-block",
                name,
                f"{len(missing)} blocks needed by {backup_id} are damaged or missing",
            )
        )
    for off in range(0, len(manifest.digests), DIGEST_SIZE):
        referenced.insert(manifest.digests[off : off + DIGEST_SIZE], 0, 0, 0)


def _digests_of(index: DedupIndex) -> bytes:
    return b"".join(d for d, _ in iter_records(index.to_bytes()))
