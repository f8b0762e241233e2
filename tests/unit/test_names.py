"""Property tests of name validation."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cygnet.errors import InvalidArgument
from cygnet.names import MAX_NAME_LENGTH, validate_name

SAFE = st.text(alphabet=st.characters(categories=["L", "N"]) | st.sampled_from("_-.: "),
               min_size=1, max_size=MAX_NAME_LENGTH)


def acceptable(name: str) -> bool:
    return (0 < len(name) <= MAX_NAME_LENGTH and name == name.strip() and ".." not in name
            and not name.startswith("-") and name != "."
            and not any(c in "/@\\" or unicodedata.category(c).startswith("C") for c in name))


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
