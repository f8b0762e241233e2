"""The catalog a clean stop saves (agent/catalog_file.py): it serves one start, for the
same pools, properties and cygnetd version only."""

from __future__ import annotations

import json
from pathlib import Path

from cygnet.agent import catalog_file
from cygnet.zfs import Dataset

PROPS = ("type", "cygnet:kind")
GROUPS = {"": {"p/cygnet": Dataset("p/cygnet", {"type": "filesystem"})},
          "p/cygnet/db/db1": {"p/cygnet/db/db1": Dataset(
              "p/cygnet/db/db1", {"type": "filesystem"}, {"cygnet:kind": "database"})}}


def test_saved_then_taken_once(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    catalog_file.save(path, GROUPS, {"p": "1"}, PROPS)
    assert path.stat().st_mode & 0o777 == 0o600
    assert catalog_file.take(path, {"p": "1"}, PROPS) == GROUPS
    assert not path.exists()
    assert catalog_file.take(path, {"p": "1"}, PROPS) is None  # one start only


def test_other_pools_a_pool_made_again_or_a_bad_file_are_not_used(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    others = (({"p": "1", "q": "2"}, PROPS), ({"p": "1"}, (*PROPS, "cygnet:new")),
              ({"p": "9"}, PROPS))  # "9": the pool made again, its root a new guid
    for pools, props in others:
        catalog_file.save(path, GROUPS, {"p": "1"}, PROPS)
        assert catalog_file.take(path, pools, props) is None
        assert not path.exists()
    assert not catalog_file.save(path, GROUPS, {"p": ""}, PROPS)  # a root's guid unknown
    assert not path.exists()
    catalog_file.save(path, GROUPS, {"p": "1"}, PROPS)
    body = json.loads(path.read_text())
    path.write_text(json.dumps(body | {"version": "0.0.1"}))
    assert catalog_file.take(path, {"p": "1"}, PROPS) is None
    for junk in ("{", '{"format": 1}', json.dumps(body | {"groups": {"": {"x": 5}}})):
        path.write_text(junk)
        assert catalog_file.take(path, {"p": "1"}, PROPS) is None
        assert not path.exists()
