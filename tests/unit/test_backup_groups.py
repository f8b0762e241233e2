"""Blocks compressed together in group frames: storing, restoring, pruning, damage."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from cygnet import backup
from cygnet.backup import store
from cygnet.backup.packs import MAX_GROUP, read_idx
from cygnet.backup.repo import open_repository
from cygnet.blocks import BLOCK_SIZE, hash_file, iter_records
from cygnet.blocks.synthetic import page


def records(repo: Path) -> list[tuple[bytes, int, int, int]]:
    """(digest, pack, offset, slot) of every stored block."""
    r = open_repository(repo)
    return [
        (digest, loc.pack_id, loc.offset, loc.slot)
        for pack_id in r.pack_ids()
        for digest, loc in iter_records(read_idx(r, pack_id))
    ]


def write_pages(path: Path, pages: list[bytes], tail: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(pages) + tail)


def restored_equal(repo: Path, backup_id: str, src: Path, dest: Path) -> bool:
    backup.restore(repo, backup_id, dest)
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file()) and all(
        hash_file(src / f) == hash_file(dest / f) for f in files
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Distinct pages, repeated zero pages inside one chunk, and a partial last block."""
    rng = random.Random(7)
    src = tmp_path / "src"
    write_pages(src / "base" / "1" / "1259", [page(rng) for _ in range(3 * MAX_GROUP + 5)])
    zeros = [bytes(BLOCK_SIZE)] * 10
    write_pages(src / "base" / "1" / "2600", [page(rng), *zeros, page(rng)], b"tail" * 100)
    return src


def test_blocks_share_frames_and_restore(tmp_path: Path, tree: Path) -> None:
    repo = tmp_path / "repo"
    info = backup.create_backup(repo, tree, {"database": "d"})
    recs = records(repo)
    digests = [r[0] for r in recs]
    assert len(digests) == len(set(digests)) == info.new_blocks
    assert max(r[3] for r in recs) == MAX_GROUP - 1  # full groups of MAX_GROUP blocks
    frames = {(r[1], r[2]) for r in recs}
    assert len(frames) < len(recs) / 4
    assert restored_equal(repo, info.backup_id, tree, tmp_path / "out")


def test_prune_recompresses_frames_that_lost_blocks(tmp_path: Path, tree: Path) -> None:
    repo = tmp_path / "repo"
    first = backup.create_backup(repo, tree, {"database": "d"})
    rel = tree / "base" / "1" / "1259"
    data = bytearray(rel.read_bytes())
    rng = random.Random(8)
    for i in range(0, len(data) // BLOCK_SIZE, 2):  # every other block changes
        data[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE] = page(rng)
    rel.write_bytes(bytes(data))
    second = backup.create_backup(repo, tree, {"database": "d"})
    before = {r[0] for r in records(repo)}
    report = backup.prune(repo, delete=[first.backup_id])
    assert report.packs_rewritten >= 1
    after = {r[0] for r in records(repo)}
    assert after < before
    assert backup.verify(repo).ok
    assert restored_equal(repo, second.backup_id, tree, tmp_path / "out")


def test_damage_in_a_group_frame_is_found(tmp_path: Path, tree: Path) -> None:
    repo = tmp_path / "repo"
    info = backup.create_backup(repo, tree, {"database": "d"})
    pack = next((repo / "packs").glob("*.pack"))
    _, _, offset, _ = next(r for r in records(repo) if r[3] == 1)
    with open(pack, "r+b") as f:
        f.seek(offset + 20)
        byte = f.read(1)
        f.seek(offset + 20)
        f.write(bytes([byte[0] ^ 0xFF]))
    report = backup.verify(repo)
    assert not report.ok
    assert any(i.kind == "pack" for i in report.issues)
    with pytest.raises(backup.CorruptRepository):
        backup.restore(repo, info.backup_id, tmp_path / "out")


def test_a_file_that_grows_while_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source that is not a snapshot: a real write lands after the file's last chunk is read."""
    src = tmp_path / "src"
    src.mkdir()
    grower = src / "grows"
    grower.write_bytes(os.urandom(BLOCK_SIZE))
    read_chunk = store._pread_full

    def read_then_grow(fd: int, length: int, offset: int) -> bytes:
        out = read_chunk(fd, length, offset)
        with open(grower, "ab") as f:
            f.write(b"more")
        return out

    monkeypatch.setattr(store, "_pread_full", read_then_grow)
    with pytest.raises(store.SourceChanged, match="grew while it was read"):
        backup.create_backup(tmp_path / "repo", src, {})
    assert not list((tmp_path / "repo" / "backups").iterdir())
