"""A branch's own settings: validation against pg_settings rows, the file, owned settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from cygnet.errors import InvalidArgument
from cygnet.postgres import owned
from cygnet.postgres import settings as S

DEFS = {d.name: d for d in [
    S.Definition("work_mem", "4096", "kB", "integer", "user", "64", "2147483647", None),
    S.Definition("shared_buffers", "2048", "8kB", "integer", "postmaster", "16",
                 "1073741823", None),
    S.Definition("statement_timeout", "0", "ms", "integer", "user", "0", "2147483647", None),
    S.Definition("random_page_cost", "4", None, "real", "user", "0", "1.79769e+308", None),
    S.Definition("enable_seqscan", "on", None, "bool", "user", None, None, None),
    S.Definition("wal_level", "replica", None, "enum", "postmaster", None, None,
                 ["minimal", "replica", "logical"]),
    S.Definition("shared_preload_libraries", "pg_stat_statements", None, "string",
                 "postmaster", None, None, None),
    S.Definition("block_size", "8192", None, "integer", "internal", "8192", "8192", None),
]}


@pytest.mark.parametrize(("name", "value", "setting"), [
    ("work_mem", "64MB", "65536"),
    ("work_mem", "1GB", "1048576"),
    ("work_mem", "100", "100"),
    ("shared_buffers", "128MB", "16384"),
    ("statement_timeout", "1min", "60000"),
    ("statement_timeout", "1.5s", "1500"),
    ("enable_seqscan", "False", "off"),
    ("wal_level", "LOGICAL", "logical"),
    ("random_page_cost", "1.1", "1.1"),
])
def test_good_values_normalize_like_pg_settings(name: str, value: str, setting: str) -> None:
    assert S.normalize(DEFS[name], value) == setting
    assert S.validate(DEFS, {name: value}) == {name: value}


@pytest.mark.parametrize(("name", "value", "words"), [
    ("no_such", "1", "unknown setting"),
    ("work_mem", "lots", "not an integer"),
    ("work_mem", "1", "out of range"),
    ("work_mem", "5 parsecs", "unit"),
    ("statement_timeout", "5MB", "unit"),
    ("enable_seqscan", "maybe", "boolean"),
    ("wal_level", "verbose", "not one of"),
    ("block_size", "8192", "cannot be set"),
    ("port", "5999", "set by Cygnet"),
    ("SSL", "off", "set by Cygnet"),
    ("shared_preload_libraries", "auto_explain", "must keep pg_stat_statements"),
    ("shared_preload_libraries", "pg_stat_statements,../x", "not a library name"),
    ("shared_preload_libraries", "pg_stat_statements,cygnet_fence", "replicated primaries"),
    ("work_mem", "1\n2", "control characters"),
])
def test_bad_values_name_the_key(name: str, value: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        S.validate(DEFS, {name: value})
    assert err.value.field == f"settings.{name}"
    assert words in str(err.value)


def test_a_bad_name_is_not_echoed_into_the_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        S.validate(DEFS, {"x\x00y": "1"})
    assert err.value.field == "settings"


def test_missing_library_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pg_stat_statements.so").touch()
    S.validate(DEFS, {"shared_preload_libraries": "pg_stat_statements"}, tmp_path)
    with pytest.raises(InvalidArgument, match="not installed"):
        S.validate(DEFS, {"shared_preload_libraries": "pg_stat_statements,nope"}, tmp_path)


def test_pending_only_for_changed_restart_settings() -> None:
    assert S.pending(DEFS["shared_buffers"], "32MB")
    assert not S.pending(DEFS["shared_buffers"], "16MB")
    assert not S.pending(DEFS["work_mem"], "64MB")
    assert not S.pending(DEFS["shared_preload_libraries"], "pg_stat_statements")


def test_the_fence_cygnet_adds_is_not_a_pending_change() -> None:
    fenced = S.Definition("shared_preload_libraries", "pg_stat_statements,cygnet_fence", None,
                          "string", "postmaster", None, None, None)
    assert not S.pending(fenced, "pg_stat_statements")
    assert S.pending(fenced, "pg_stat_statements,auto_explain")


@pytest.mark.parametrize(("own", "preloaded", "line"), [
    (None, owned.PRELOADED, "'pg_stat_statements'"),
    (None, owned.PRELOADED + owned.FENCE, "'pg_stat_statements,cygnet_fence'"),
    ("pg_stat_statements,auto_explain", owned.PRELOADED + owned.FENCE,
     "'pg_stat_statements,auto_explain,cygnet_fence'"),
    ("auto_explain, pg_stat_statements", owned.PRELOADED, "'auto_explain,pg_stat_statements'"),
])
def test_the_final_file_keeps_cygnets_libraries_in_the_branch_list(
        tmp_path: Path, own: str | None, preloaded: tuple[str, ...], line: str) -> None:
    (tmp_path / "postgresql.conf").write_text("include_if_exists = 'cygnet.conf'\n")
    S.write(tmp_path, {"shared_preload_libraries": own} if own else {})
    S.prepare(tmp_path, preloaded)
    assert (tmp_path / S.FINAL_FILE).read_text() == f"shared_preload_libraries = {line}\n"
    lines = (tmp_path / "postgresql.conf").read_text().splitlines()
    assert lines.index(S.FINAL_INCLUDE_LINE) > lines.index(S.USER_INCLUDE_LINE)
    S.prepare(tmp_path, preloaded)  # idempotent
    assert (tmp_path / "postgresql.conf").read_text().count(S.FINAL_INCLUDE_LINE) == 1


def test_file_round_trip_and_quoting(tmp_path: Path) -> None:
    wanted = {"search_path": "\"$user\", public", "application_name": "it's a \\ test"}
    S.write(tmp_path, wanted)
    assert S.read(tmp_path) == wanted
    assert S.read(tmp_path / "missing") == {}


def test_prepare_strips_owned_from_auto_conf_and_includes_user_file(tmp_path: Path) -> None:
    (tmp_path / "postgresql.conf").write_text("max_connections = 100\n"
                                              "include_if_exists = 'cygnet.conf'\n")
    (tmp_path / "postgresql.auto.conf").write_text(
        "# Do not edit\nport = '6000'\nwork_mem = '8MB'\nSSL = off\n"
        "shared_preload_libraries = ''\n")
    (tmp_path / S.USER_FILE).write_text("work_mem = '4MB'\nport = '6001'\n")
    S.prepare(tmp_path)
    auto = (tmp_path / "postgresql.auto.conf").read_text()
    assert auto == "# Do not edit\nwork_mem = '8MB'\n"
    assert S.read(tmp_path) == {"work_mem": "4MB"}
    assert "port" not in (tmp_path / S.USER_FILE).read_text()
    lines = (tmp_path / "postgresql.conf").read_text().splitlines()
    assert lines.index(S.USER_INCLUDE_LINE) > lines.index("include_if_exists = 'cygnet.conf'")
    S.prepare(tmp_path)  # idempotent
    assert (tmp_path / "postgresql.conf").read_text().count(S.USER_INCLUDE_LINE) == 1


def test_setting_name_of_config_lines() -> None:
    assert owned.setting_name("Port=5432") == "port"
    assert owned.setting_name("  ssl off # comment") == "ssl"
    assert owned.setting_name("# port = 1") == ""
