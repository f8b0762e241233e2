"""Delta manifests: a backup close to an earlier one stores only its differences."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from cygnet import backup
from cygnet.backup import delta
from cygnet.backup.manifest import (
    MAGIC_V1,
    Entry,
    Manifest,
    decode,
    encode,
    read_header,
    read_manifest,
)
from cygnet.backup.models import BackupInfo
from cygnet.backup.repo import open_repository
from cygnet.blocks import BLOCK_SIZE, DIGEST_SIZE, hash_file
from cygnet.blocks.synthetic import change_pages, make_pgdata

BASE_ID = "20260101T000000000000Z-00000001"
NEW_ID = "20260101T000000000001Z-00000002"


def info_of(backup_id: str) -> BackupInfo:
    return BackupInfo(backup_id, datetime(2026, 1, 1, tzinfo=UTC), {}, 0, 0, 0, 0, 0, 0.0)


def manifest_of(backup_id: str, files: list[tuple[str, bytes, int]]) -> Manifest:
    """Files are (path, digest array, bytes short of whole blocks); a directory
    and a symlink sit between them, as in a real tree."""
    entries = [Entry(".", "dir", 0o700), Entry("d", "dir", 0o700)]
    for i, (path, digests, short) in enumerate(files):
        nblocks = len(digests) // DIGEST_SIZE
        size = nblocks * BLOCK_SIZE - (short if nblocks else 0)
        entries.append(Entry(f"d/{path}", "file", 0o600, i, size))
        if i == 1:
            entries.append(Entry("d/link", "symlink", 0o777, 0, target="x"))
    return Manifest(info_of(backup_id), entries, b"".join(d for _, d, _ in files))


def manifest_size(repo: Path, backup_id: str) -> int:
    return (repo / "backups" / f"{backup_id}.manifest").stat().st_size


def base_of(repo: Path, backup_id: str) -> str | None:
    return read_header(open_repository(repo), backup_id)[1]


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if files != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(hash_file(a / p) == hash_file(b / p) for p in files)


# A few fixed digests make equal blocks and equal files (renames) likely.
DIGESTS = st.one_of(
    st.sampled_from([bytes([i]) * DIGEST_SIZE for i in range(3)]),
    st.binary(min_size=DIGEST_SIZE, max_size=DIGEST_SIZE),
)
ARRAYS = st.lists(DIGESTS, max_size=10).map(b"".join)
SHORT = st.integers(0, BLOCK_SIZE - 1)
ACTIONS = ["keep", "change", "grow", "shrink", "rename", "delete", "empty"]


def blocks_of(digests: bytes) -> list[bytes]:
    return [digests[i : i + DIGEST_SIZE] for i in range(0, len(digests), DIGEST_SIZE)]


@st.composite
def base_and_new(draw: st.DrawFn) -> tuple[Manifest, Manifest]:
    base = [(f"f{i}", draw(ARRAYS), draw(SHORT)) for i in range(draw(st.integers(0, 8)))]
    new: list[tuple[str, bytes, int]] = []
    for i, (path, digests, _) in enumerate(base):
        action = draw(st.sampled_from(ACTIONS))
        blocks = blocks_of(digests)
        if action == "change" and blocks:
            for j in draw(st.lists(st.integers(0, len(blocks) - 1), max_size=4)):
                blocks[j] = draw(DIGESTS)
        elif action == "grow":
            blocks += draw(st.lists(DIGESTS, min_size=1, max_size=5))
        elif action == "shrink":
            blocks = blocks[: draw(st.integers(0, len(blocks)))]
        elif action == "rename":
            path = f"r{i}"
        elif action == "delete":
            continue
        elif action == "empty":
            blocks = []
        new.append((path, b"".join(blocks), draw(SHORT)))
    new += [(f"n{i}", draw(ARRAYS), draw(SHORT)) for i in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()) and base:
        new.append(("copy", draw(st.sampled_from(base))[1], 0))
    return manifest_of(BASE_ID, base), manifest_of(NEW_ID, draw(st.permutations(new)))


@settings(max_examples=400, deadline=None)
@given(base_and_new())
def test_delta_round_trips(pair: tuple[Manifest, Manifest]) -> None:
    base, new = pair
    stored = decode(b"".join(encode(new, base)), "new.manifest")
    assert stored.base == BASE_ID
    assert stored.materialize(base) == new
    # Never more digest bytes than a full manifest (a patch is used only if cheaper).
    assert len(stored.delta.payload) + len(stored.delta.indices) <= len(new.digests)
    full = decode(b"".join(encode(new)), "new.manifest")
    assert full.base is None and full.materialize(None) == new


def test_renamed_and_patched_files_cost_what_changed() -> None:
    a, b = os.urandom(40 * DIGEST_SIZE), os.urandom(40 * DIGEST_SIZE)
    patched = bytearray(b)
    patched[5 * DIGEST_SIZE : 6 * DIGEST_SIZE] = os.urandom(DIGEST_SIZE)
    grown = bytes(patched) + os.urandom(2 * DIGEST_SIZE)
    base = [("wal/0001", a), ("rel", b)]
    d = delta.encode([("wal/0002", a), ("rel", grown), ("empty", b"")], base)
    assert d.ops == [["S", 0], ["P", 3], "F"]
    assert d.indices == b"".join(i.to_bytes(4, "little") for i in (5, 35, 1))  # gaps
    assert len(d.payload) == 3 * DIGEST_SIZE
    shapes = [("wal/0002", 40), ("rel", 42), ("empty", 0)]
    assert delta.decode(shapes, d, base) == a + grown


def test_delta_against_the_wrong_base_is_refused() -> None:
    digests = os.urandom(8 * DIGEST_SIZE)
    base = manifest_of(BASE_ID, [("a", digests, 0)])
    changed = digests[:DIGEST_SIZE] + os.urandom(DIGEST_SIZE) + digests[2 * DIGEST_SIZE :]
    stored = decode(b"".join(encode(manifest_of(NEW_ID, [("a", changed, 0)]), base)), "x")
    other = manifest_of(BASE_ID, [("a", os.urandom(8 * DIGEST_SIZE), 0)])
    with pytest.raises(ValueError, match="digests differ"):
        stored.materialize(other)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, list[Path]]:
    src = tmp_path / "src"
    return src, make_pgdata(src, 32 << 20, seed=5)


def test_one_percent_changed_writes_a_small_manifest(
    tmp_path: Path, tree: tuple[Path, list[Path]]
) -> None:
    src, files = tree
    repo = tmp_path / "repo"
    first = backup.create_backup(repo, src, {"database": "db"})
    assert change_pages(files, 0.01) > 0
    (src / "pg_wal" / "000000010000000000000002").write_bytes(os.urandom(4 * BLOCK_SIZE))
    second = backup.create_backup(repo, src, {"database": "db"})
    assert base_of(repo, first.backup_id) is None
    assert base_of(repo, second.backup_id) == first.backup_id
    full, small = manifest_size(repo, first.backup_id), manifest_size(repo, second.backup_id)
    assert small < 0.1 * full, (small, full)
    backup.restore(repo, second.backup_id, tmp_path / "dest")
    assert same_tree(src, tmp_path / "dest")
    report = backup.verify(repo)
    assert report.ok and report.manifests_checked == 2 and report.unreferenced_blocks == 0
    # Depth 1: the next delta is based on the full manifest, never on a delta.
    (src / "pg_wal" / "000000010000000000000002").rename(src / "pg_wal" / "recycled")
    third = backup.create_backup(repo, src, {"database": "db"})
    assert base_of(repo, third.backup_id) == first.backup_id


def test_base_of_the_same_database_is_preferred(
    tmp_path: Path, tree: tuple[Path, list[Path]]
) -> None:
    src, files = tree
    other = tmp_path / "other"
    make_pgdata(other, 4 << 20, seed=99)
    repo = tmp_path / "repo"
    first = backup.create_backup(repo, src, {"database": "a"})
    unrelated = backup.create_backup(repo, other, {"database": "b"})
    assert base_of(repo, unrelated.backup_id) is None  # nothing alike: full
    change_pages(files, 0.01)
    second = backup.create_backup(repo, src, {"database": "a"})
    assert base_of(repo, second.backup_id) == first.backup_id
    # Another database's copy of the same data still finds its base among the others.
    copy = backup.create_backup(repo, src, {"database": "copy"})
    assert base_of(repo, copy.backup_id) == first.backup_id


def generations(tmp_path: Path, count: int) -> tuple[Path, list[str], list[Path]]:
    """Backups of a tree changing 2% a time, with a copy of the tree at each."""
    src, repo = tmp_path / "src", tmp_path / "repo"
    files = make_pgdata(src, 8 << 20, seed=8)
    ids, copies = [], []
    for gen in range(count):
        if gen:
            change_pages(files, 0.02, seed=gen)
        ids.append(backup.create_backup(repo, src, {"database": "db"}).backup_id)
        copies.append(tmp_path / f"gen{gen}")
        shutil.copytree(src, copies[-1])
    return repo, ids, copies


def test_prune_of_the_base_rebases_its_dependents(tmp_path: Path) -> None:
    repo, ids, copies = generations(tmp_path, 4)
    assert [base_of(repo, b) for b in ids] == [None, ids[0], ids[0], ids[0]]
    backup.prune(repo, delete=[ids[0]])
    # The newest dependent became the full base of the others.
    assert [base_of(repo, b) for b in ids[1:]] == [ids[3], ids[3], None]
    report = backup.verify(repo)
    assert report.ok and report.manifests_checked == 3 and report.unreferenced_blocks == 0
    for backup_id, copy in zip(ids[1:], copies[1:], strict=True):
        backup.restore(repo, backup_id, tmp_path / f"r{backup_id}")
        assert same_tree(copy, tmp_path / f"r{backup_id}")
    backup.prune(repo, keep_last=1)
    assert base_of(repo, ids[3]) is None and backup.verify(repo).ok


def test_verify_reports_a_missing_base(tmp_path: Path) -> None:
    repo, ids, _ = generations(tmp_path, 2)
    (repo / "backups" / f"{ids[0]}.manifest").unlink()
    report = backup.verify(repo)
    assert [(i.kind, i.path) for i in report.issues] == [("manifest", f"{ids[1]}.manifest")]
    assert ids[0] in report.issues[0].detail and "missing" in report.issues[0].detail
    with pytest.raises(backup.CorruptRepository, match=ids[0]):
        backup.restore(repo, ids[1], tmp_path / "dest")
    assert [b.backup_id for b in backup.list_backups(repo)] == [ids[1]]


@pytest.mark.parametrize("where", ["link", "section", "payload"])
def test_bit_flipped_delta_is_reported(tmp_path: Path, where: str) -> None:
    repo, ids, _ = generations(tmp_path, 2)
    path = repo / "backups" / f"{ids[1]}.manifest"
    data = bytearray(path.read_bytes())
    lines = data.split(b"\n", 3)
    offset = {
        "link": len(lines[0]) + len(lines[1]) + 5,
        "section": sum(len(line) + 1 for line in lines[:3]) + 20,
        "payload": len(data) - 30,
    }[where]
    data[offset] ^= 0x08
    path.write_bytes(data)
    report = backup.verify(repo)
    assert [(i.kind, i.path) for i in report.issues] == [("manifest", path.name)]
    with pytest.raises(backup.CorruptRepository):
        backup.restore(repo, ids[1], tmp_path / "dest")
    backup.restore(repo, ids[0], tmp_path / "base")  # the base is unharmed


def write_v1(repo: Path, backup_id: str) -> None:
    """Rewrites a backup's manifest in format version 1, as older Cygnets did."""
    m = read_manifest(open_repository(repo), backup_id)
    head = MAGIC_V1 + json.dumps(m.info.to_json()).encode() + b"\n"
    body = head + json.dumps([e.to_json() for e in m.entries]).encode() + b"\n" + m.digests
    (repo / "backups" / f"{backup_id}.manifest").write_bytes(body + xxhash.xxh3_128_digest(body))


def test_version_1_manifests_are_read_and_serve_as_bases(tmp_path: Path) -> None:
    repo, ids, copies = generations(tmp_path, 2)
    backup.prune(repo, delete=[ids[1]])
    write_v1(repo, ids[0])
    assert backup.get_backup(repo, ids[0]).backup_id == ids[0]
    src = tmp_path / "src"
    newer = backup.create_backup(repo, src, {"database": "db"}).backup_id
    assert base_of(repo, newer) == ids[0]
    assert backup.verify(repo).ok
    backup.restore(repo, ids[0], tmp_path / "old")
    assert same_tree(copies[0], tmp_path / "old")
    backup.prune(repo, delete=[ids[0]])  # the delta on a v1 base becomes full
    backup.restore(repo, newer, tmp_path / "new")
    assert same_tree(src, tmp_path / "new") and backup.verify(repo).ok


# Runs a prune that SIGKILLs itself after its n-th manifest write or unlink:
# the states a crash can leave, each reached by a real kill -9.
KILLER = """
import os, signal, sys
import cygnet.backup
from cygnet.backup import fsutil, manifest, pruned
prune = sys.modules["cygnet.backup.prune"]  # cygnet.backup.prune is also the function
steps = 0
def step(real):
    def wrapped(*args, **kwargs):
        global steps
        real(*args, **kwargs)
        steps += 1
        if steps == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
    return wrapped
manifest.atomic_write = step(fsutil.atomic_write)
pruned.unlink_durably = step(fsutil.unlink_durably)
prune.prune(sys.argv[1], delete=sys.argv[3:])
"""


def test_prune_killed_between_rebases(tmp_path: Path) -> None:
    template, ids, copies = generations(tmp_path, 4)
    for n in range(1, 6):  # three rewrites, the manifest unlink, the pack unlinks
        repo = tmp_path / f"repo{n}"
        shutil.copytree(template, repo)
        args = [sys.executable, "-c", KILLER, str(repo), str(n), ids[0]]
        assert subprocess.run(args, check=False).returncode == -signal.SIGKILL
        report = backup.verify(repo)
        assert report.ok, (n, report.issues)
        remaining = [b.backup_id for b in backup.list_backups(repo)]
        assert remaining == (ids if n <= 3 else ids[1:])
        for backup_id in remaining:
            dest = tmp_path / f"d{n}-{backup_id}"
            backup.restore(repo, backup_id, dest)
            assert same_tree(copies[ids.index(backup_id)], dest)
        backup.prune(repo, delete=[ids[0]] if n <= 3 else [])  # finishing is clean too
        assert backup.verify(repo).ok
