"""Property tests of name validation."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cygnet.errors import InvalidArgument
from cygnet.names import (
    MAX_NAME_LENGTH,
    id_kind,
    shown,
    validate_name,
    validate_reference,
    validate_request_id,
)

SAFE = st.text(alphabet=st.characters(categories=["L", "N"]) | st.sampled_from("_-.: "),
               min_size=1, max_size=MAX_NAME_LENGTH)


def acceptable(name: str) -> bool:
    return (0 < len(name) <= MAX_NAME_LENGTH and name == name.strip() and ".." not in name
            and not name.startswith("-") and name != "."
            and not any(c in "/@\\" or unicodedata.category(c).startswith("C") for c in name)
            and id_kind(name) is None)


@given(st.text(max_size=80))
def test_accepts_exactly_the_acceptable_names(name: str) -> None:
    if acceptable(name):
        assert validate_name("name", name) == name
    else:
        with pytest.raises(InvalidArgument) as err:
            validate_name("name", name)
        assert err.value.field == "name" and str(err.value).startswith("name: ")


@given(SAFE)
def test_plain_names_pass(name: str) -> None:
    if acceptable(name):
        assert validate_name("branch", name) == name


@given(st.text(max_size=20), st.sampled_from(["/", "@", "..", "\x00", "\n", "\x7f", "\u200b"]),
       st.text(max_size=20))
def test_forbidden_parts_are_refused_anywhere(head: str, bad: str, tail: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_name("name", head + bad + tail)
    assert err.value.field == "name"


@given(st.binary(max_size=40))
def test_bytes_must_be_utf8(raw: bytes) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(InvalidArgument, match="UTF-8"):
            validate_name("name", raw)
        return
    if acceptable(text):
        assert validate_name("name", raw) == text


def test_length_limit_names_the_count() -> None:
    with pytest.raises(InvalidArgument, match="at most 63 characters, got 64"):
        validate_name("name", "x" * 64)
    assert validate_name("name", "x" * 63) == "x" * 63


ID_SHAPED = st.builds(lambda kind, tail: kind + tail, st.sampled_from(["db", "br", "sn", "tm"]),
                      st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=10,
                              max_size=10))


@given(ID_SHAPED)
def test_a_name_never_has_the_shape_of_an_id(text: str) -> None:
    # `db create dbXXXXXXXXXX` then `db rm dbXXXXXXXXXX` must not be able to hit another.
    with pytest.raises(InvalidArgument, match=r"shape of a .* id") as err:
        validate_name("name", text)
    assert err.value.field == "name"


def test_backup_ids_are_ids_too() -> None:
    with pytest.raises(InvalidArgument, match="backup id"):
        validate_name("branch_name", "20261125T211520123456Z-0a1b2c3d")
    # Near misses are plain names.
    for name in ("db123", "dbABCDEFGHIJ", "br0123456789x", "production01"):
        assert validate_name("name", name) == name


@given(ID_SHAPED)
def test_a_reference_takes_an_id_of_its_own_kind_only(text: str) -> None:
    prefix = text[:2]
    for kind in ("db", "br", "sn"):
        if kind == prefix:
            assert validate_reference("database", text, kind) == text
        else:
            with pytest.raises(InvalidArgument, match=r"is a .* id, not a"):
                validate_reference("database", text, kind)


def test_huge_values_are_never_echoed_whole() -> None:
    huge = "x/" * 10_000
    checks: tuple[Callable[[], object], ...] = (
        lambda: validate_reference("database", huge, "db"),
        lambda: validate_name("name", huge),
        lambda: validate_request_id("request_id", huge))
    for check in checks:
        with pytest.raises(InvalidArgument) as err:
            check()
        assert len(str(err.value)) < 200
    assert len(shown(huge)) < 80 and "20000 characters" in shown(huge)


@pytest.mark.parametrize("bad", ["", "has space", "nul\x00", "é", "x" * 129])
def test_request_ids_are_printable_ascii(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_request_id("request_id", bad)
    assert validate_request_id("request_id", "coord-0a1b2c3d") == "coord-0a1b2c3d"
