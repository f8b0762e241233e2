"""Migration files (golang-migrate's layout) and masking rules, parsed: no server needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cygnet.errors import InvalidArgument
from cygnet.masking import rules as R
from cygnet.migrate.files import read_dir


def test_read_dir_pairs_orders_and_names_bad_files(tmp_path: Path) -> None:
    for name, text in {"10_c.up.sql": "c", "002_b.up.sql": "b", "002_b.down.sql": "-b",
                       "1_a.up.sql": "a", "README.md": "ignored"}.items():
        (tmp_path / name).write_text(text)
    found = read_dir(tmp_path)
    assert [(m.version, m.name, m.down) for m in found] == [(1, "a", ""), (2, "b", "-b"),
                                                           (10, "c", "")]
    assert found[0].checksum == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
    (tmp_path / "01_a2.up.sql").write_text("x")
    with pytest.raises(InvalidArgument, match="same version 1"):
        read_dir(tmp_path)
    (tmp_path / "01_a2.up.sql").unlink()
    (tmp_path / "3_x.sql").write_text("x")
    with pytest.raises(InvalidArgument, match=r"3_x\.sql is not"):
        read_dir(tmp_path)
    (tmp_path / "3_x.sql").unlink()
    (tmp_path / "4_d.down.sql").write_text("x")
    with pytest.raises(InvalidArgument, match="4_d has no up file"):
        read_dir(tmp_path)


def test_rules_parse_keys_and_options() -> None:
    rules = R.parse('[databases.app]\n"users.email" = "email"\n'
                    '\'sales."Big Table".card\' = { mask = "partial", last = 4 }\n')
    assert [(r.dbname, r.schema, r.table, r.column, r.mask, r.last) for r in rules] == [
        ("app", "public", "users", "email", "email", 0),
        ("app", "sales", "Big Table", "card", "partial", 4)]
    for text, message in (("[other]\n", "unknown section"),
                          ('[databases.a]\n"t.c" = { mask = "partial" }', "partial keeps"),
                          ('[databases.a]\n"t.c" = { mask = "hash", salt = 1 }', "salt"),
                          ("[databases.a\n", "not valid TOML")):
        with pytest.raises(InvalidArgument, match=message):
            R.parse(text)
