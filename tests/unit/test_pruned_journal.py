"""The journal of pruned objects (backup/pruned.py): what a prune records is read
back in order, settling drops exactly what it names, and a torn line is skipped."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cygnet.backup import pruned

names = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="\\"),
                min_size=1, max_size=20).map(lambda s: "packs/" + s)


@given(st.lists(names, max_size=20), st.lists(names, max_size=5), st.data())
def test_settle_keeps_what_it_was_not_told_about(first: list[str], later: list[str],
                                                 data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as where:
        _settle_round(Path(where), first, later, data)


def _settle_round(repo: Path, first: list[str], later: list[str], data: st.DataObject
                  ) -> None:
    pruned.follow(repo, True)
    pruned.record(repo, first)
    assert [rel for rel, _ in pruned.read(repo)] == first
    done = set(data.draw(st.lists(st.sampled_from(first), max_size=len(first)))) \
        if first else set()
    retry = {rel: 123.0 for rel in first if rel not in done}
    pruned.record(repo, later)  # a prune between the read and the settle
    pruned.settle(repo, done, retry)
    left = pruned.read(repo)
    assert [rel for rel, _ in left] == [r for r in first + later if r not in done]
    assert all(when == (123.0 if rel in retry else 0.0) for rel, when in left)


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    pruned.follow(tmp_path, True)
    pruned.record(tmp_path, ["backups/a.manifest"])
    with open(tmp_path / pruned.JOURNAL, "a") as f:
        f.write("packs/half")
    assert pruned.read(tmp_path) == [("backups/a.manifest", 0.0)]


def test_nothing_is_kept_unless_followed(tmp_path: Path) -> None:
    pruned.record(tmp_path, ["backups/a.manifest"])
    assert pruned.read(tmp_path) == []
    pruned.follow(tmp_path, True)
    pruned.record(tmp_path, ["backups/a.manifest"])
    pruned.follow(tmp_path, False)
    assert pruned.read(tmp_path) == [] and not (tmp_path / pruned.FOLLOWED).exists()


def test_unlink_recorded_records_then_removes(tmp_path: Path) -> None:
    pruned.follow(tmp_path, True)
    (tmp_path / "wal").mkdir()
    f = tmp_path / "wal" / "000000010000000000000001.zst"
    f.write_bytes(b"x")
    pruned.unlink_recorded(tmp_path, [f])
    assert not f.exists()
    assert pruned.read(tmp_path) == [("wal/000000010000000000000001.zst", 0.0)]
