"""What the repository prunes goes from the bucket too (offsite/expire.py), against a
real SeaweedFS with object lock: every version of each pruned key, never an object
the repository lost by accident, never one still under object lock."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cygnet import backup
from cygnet.backup import pruned
from cygnet.offsite import fetch
from cygnet.offsite.store import ObjectStore
from cygnet.offsite.sync import Uploader
from tests.integration.test_offsite import offsite_config
from tests.s3_helpers import Seaweed, seaweed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store() -> Iterator[Seaweed]:
    with seaweed() as s:
        yield s


def _two_backups(where: Path) -> tuple[Path, str, str, Path]:
    """A repository with backups `old` and `new` of different random data (so that
    pruning `old` frees packs), and one archived WAL object."""
    repo = where / "repo"
    ids = []
    for name in ("old", "new"):
        src = where / name
        src.mkdir()
        (src / "data").write_bytes(os.urandom(3 << 20))
        ids.append(backup.create_backup(repo, src, {"database": name}).backup_id)
    wal = repo / "wal" / "br_x" / "g1" / "000000010000000000000001.zst"
    wal.parent.mkdir(parents=True)
    wal.write_bytes(os.urandom(1 << 16))
    return repo, ids[0], ids[1], wal


def _versions(s: Seaweed, host: str) -> set[str]:
    """Every key with a version (current or not) below the host's prefix."""
    prefix = f"hosts/{host}/"
    page = s.client().list_object_versions(Bucket=s.bucket, Prefix=prefix)
    return {v["Key"][len(prefix):] for v in [*page.get("Versions", []),
                                              *page.get("DeleteMarkers", [])]}


def test_pruned_objects_leave_the_bucket_and_the_rest_still_restores(
        store: Seaweed, tmp_path: Path) -> None:
    repo, old, new, wal = _two_backups(tmp_path)
    config = offsite_config(store, host="h-expire")
    uploader = Uploader(ObjectStore(config), repo)
    uploader.start()
    uploader.run_pass()
    before = _versions(store, "h-expire")
    assert f"backups/{old}.manifest" in before and wal.relative_to(repo).as_posix() in before

    backup.prune(repo, delete=[old])
    pruned.unlink_recorded(repo, [wal])  # as the WAL prune does
    gone = {rel for rel, _ in pruned.read(repo)}
    assert f"backups/{old}.manifest" in gone and any(r.startswith("packs/") for r in gone)
    assert all(not (repo / rel).exists() for rel in gone)

    uploader.run_pass()
    after = _versions(store, "h-expire")
    assert not gone & after, gone & after  # every version of every pruned key
    assert after == before - gone
    assert pruned.read(repo) == []
    assert uploader.status.deleted_objects == len(gone)
    # What stays restores to the very bytes, from the bucket alone.
    cache = fetch.fetch_backup(ObjectStore(config), config.keyring, "h-expire", new,
                               tmp_path / "cache")
    backup.restore(cache, new, tmp_path / "out")
    assert (tmp_path / "out" / "data").read_bytes() == (tmp_path / "new" / "data").read_bytes()
    assert [b.backup_id for h, b in fetch.list_remote(ObjectStore(config), config.keyring)
            if h == "h-expire"] == [new]

    # A file the repository lost without a prune (a wiped disk) stays in the bucket,
    # and so does one a crash left both named in the journal and still here.
    (repo / f"backups/{new}.manifest").unlink()
    pack = next(p for p in (repo / "packs").glob("*.pack"))
    pruned.record(repo, [pack.relative_to(repo).as_posix()])
    uploader.run_pass()
    assert _versions(store, "h-expire") == after
    assert pruned.read(repo) == []
    # One pruned before it ever went up: settled, and not counted as deleted.
    counted = uploader.status.deleted_objects
    pruned.record(repo, ["wal/br_x/g1/000000010000000000000009.zst"])
    uploader.run_pass()
    assert pruned.read(repo) == [] and uploader.status.deleted_objects == counted


def test_objects_under_object_lock_stay_and_are_tried_again_later(
        store: Seaweed, tmp_path: Path) -> None:
    repo, old, _, _ = _two_backups(tmp_path)
    config = offsite_config(store, host="h-locked", lock_days=1)
    uploader = Uploader(ObjectStore(config), repo)
    uploader.start()
    assert uploader.status.lock
    uploader.run_pass()
    before = _versions(store, "h-locked")

    backup.prune(repo, delete=[old])
    gone = {rel for rel, _ in pruned.read(repo)}
    uploader.run_pass()
    assert _versions(store, "h-locked") == before  # the lock refused every deletion
    assert uploader.status.locked_objects == len(gone)
    left = pruned.read(repo)
    assert {rel for rel, _ in left} == gone
    assert all(when > time.time() + 23 * 3600 for _, when in left)  # not before a day
    # Not retried at every pass: nothing is asked of the bucket until then.
    uploader.run_pass()
    assert pruned.read(repo) == left
    assert uploader.status.locked_objects == len(gone)


def test_no_deletion_when_the_setting_is_off(store: Seaweed, tmp_path: Path) -> None:
    repo, old, _, _ = _two_backups(tmp_path)
    config = offsite_config(store, host="h-keep", delete_pruned=False)
    uploader = Uploader(ObjectStore(config), repo)
    uploader.start()
    uploader.run_pass()
    before = _versions(store, "h-keep")
    backup.prune(repo, delete=[old])
    uploader.run_pass()
    assert _versions(store, "h-keep") == before
    # Nothing reads a journal then: none is kept.
    assert not (repo / pruned.JOURNAL).exists() and not (repo / pruned.FOLLOWED).exists()


def test_a_repository_nobody_follows_keeps_no_journal(tmp_path: Path) -> None:
    repo, old, _, _ = _two_backups(tmp_path)
    backup.prune(repo, delete=[old])
    assert not (repo / pruned.JOURNAL).exists()
