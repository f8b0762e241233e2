"""The catalog kept on disk (agent/catalog_file.py): a save and the journal of the
writes since serve a start, for the same pools, properties, cygnetd version and
boot only, or after a reboot a clean stop's flushed save."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cygnet.agent import catalog_file
from cygnet.agent.catalog_file import Journal, Writer
from cygnet.zfs import Dataset

PROPS = ("type", "cygnet:kind")
GROUPS = {"": {"p/cygnet": Dataset("p/cygnet", {"type": "filesystem"})},
          "p/cygnet/db/db1": {"p/cygnet/db/db1": Dataset(
              "p/cygnet/db/db1", {"type": "filesystem"}, {"cygnet:kind": "database"})}}


def writer(tmp_path: Path) -> Writer:
    return Writer(tmp_path / "catalog.json", Journal(tmp_path / "catalog.journal"))


def take(tmp_path: Path, pools: dict[str, str] | None = None,
         props: tuple[str, ...] = PROPS) -> catalog_file.Saved | None:
    return catalog_file.take(tmp_path / "catalog.json", tmp_path / "catalog.journal",
                             pools or {"p": "1"}, props)


def test_a_save_serves_every_start_with_the_writes_journalled_since(tmp_path: Path) -> None:
    w = writer(tmp_path)
    assert w.save(GROUPS, {"p": "1"}, PROPS)
    assert (tmp_path / "catalog.json").stat().st_mode & 0o777 == 0o600
    w.journal.intend("p/cygnet/db/db1/b1", tree=False)
    w.journal.intend("p/cygnet/db/db1", tree=True)
    w.journal.intend("p/cygnet/db/db1/b1", tree=False)
    w.journal.close()  # the daemon dies
    saved = take(tmp_path)
    assert saved is not None and saved.groups == GROUPS
    assert saved.generation == w.journal.generation
    assert saved.intents == {"p/cygnet/db/db1/b1": False, "p/cygnet/db/db1": True}
    # The next daemon goes on in the same generation, until its own first save.
    w2 = writer(tmp_path)
    w2.journal.begin(saved.generation, keep=True)
    w2.journal.intend("p/cygnet/db/db2", tree=False)
    again = take(tmp_path)
    assert again is not None and set(again.intents) == {*saved.intents, "p/cygnet/db/db2"}
    assert w2.save(GROUPS, {"p": "1"}, PROPS)  # a save starts the journal afresh
    latest = take(tmp_path)
    assert latest is not None and latest.intents == {}
    assert latest.generation != saved.generation


def test_a_changed_dataset_is_encoded_again_and_an_unchanged_one_kept(tmp_path: Path) -> None:
    w = writer(tmp_path)
    groups = {g: dict(ds) for g, ds in GROUPS.items()}
    w.save(groups, {"p": "1"}, PROPS)
    groups["p/cygnet/db/db1"]["p/cygnet/db/db1"] = Dataset(
        "p/cygnet/db/db1", {"type": "filesystem"}, {"cygnet:kind": "renamed"})
    groups["p/cygnet/db/db1"]["p/cygnet/db/db1/b"] = Dataset("p/cygnet/db/db1/b", {}, {})
    del groups[""]
    w.save(groups, {"p": "1"}, PROPS)
    saved = take(tmp_path)
    assert saved is not None and saved.groups == groups


@pytest.mark.parametrize("pools, props", [
    ({"p": "1", "q": "2"}, PROPS),
    ({"p": "1"}, (*PROPS, "cygnet:new")),
    ({"p": "9"}, PROPS),  # the pool made again: its root has a new guid
])
def test_other_pools_or_properties_are_not_used(tmp_path: Path, pools: dict[str, str],
                                                 props: tuple[str, ...]) -> None:
    writer(tmp_path).save(GROUPS, {"p": "1"}, PROPS)
    assert take(tmp_path, pools, props) is None
    assert not (tmp_path / "catalog.json").exists()
    assert not (tmp_path / "catalog.journal").exists()


def test_another_version_boot_or_journal_or_a_bad_file_are_not_used(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    assert not writer(tmp_path).save(GROUPS, {"p": ""}, PROPS)  # a root's guid unknown
    assert not path.exists()
    writer(tmp_path).save(GROUPS, {"p": "1"}, PROPS)
    body = json.loads(path.read_text())
    for changed in ({"version": "0.0.1"}, {"boot": "another boot"}, {"generation": "x"}):
        writer(tmp_path).save(GROUPS, {"p": "1"}, PROPS)
        body = json.loads(path.read_text())
        path.write_text(json.dumps(body | changed))
        assert take(tmp_path) is None
        assert not path.exists()
    for junk in ("{", '{"format": 2}', json.dumps(body | {"groups": [["", [5]]]})):
        writer(tmp_path).save(GROUPS, {"p": "1"}, PROPS)
        path.write_text(junk)
        assert take(tmp_path) is None
    w = writer(tmp_path)
    w.save(GROUPS, {"p": "1"}, PROPS)
    (tmp_path / "catalog.journal").write_text(f"G {w.journal.generation}\nX what\n")
    assert take(tmp_path) is None  # a line this module never wrote
    assert take(tmp_path) is None  # (and nothing left to take)


def test_a_clean_stops_save_serves_the_start_after_a_reboot_once(tmp_path: Path) -> None:
    """Flushed and marked stopped, with nothing journalled after it: another boot
    takes it, and removes the file (the journal goes on unsynced from there)."""
    path = tmp_path / "catalog.json"
    w = writer(tmp_path)
    assert w.save(GROUPS, {"p": "1"}, PROPS, stopped=True)
    w.journal.close()
    path.write_text(json.dumps(json.loads(path.read_text()) | {"boot": "before the reboot"}))
    saved = take(tmp_path)
    assert saved is not None and saved.other_boot and saved.groups == GROUPS
    assert saved.intents == {}
    assert not path.exists()
    assert take(tmp_path) is None


def test_a_save_from_before_a_reboot_is_refused_unless_a_clean_stop_made_it(
        tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    for stopped, written_after in ((False, False), (True, True)):
        w = writer(tmp_path)
        assert w.save(GROUPS, {"p": "1"}, PROPS, stopped=stopped)
        if written_after:  # a write after the save: its line may not have reached the disk
            w.journal.intend("p/cygnet/db/db1/b1", tree=False)
        w.journal.close()
        path.write_text(json.dumps(json.loads(path.read_text()) | {"boot": "earlier"}))
        assert take(tmp_path) is None
        assert not path.exists()
    # The same boot takes a stopped save as any other, and keeps the file.
    w = writer(tmp_path)
    assert w.save(GROUPS, {"p": "1"}, PROPS, stopped=True)
    saved = take(tmp_path)
    assert saved is not None and not saved.other_boot and path.exists()
