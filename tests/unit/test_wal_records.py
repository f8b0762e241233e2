"""The WAL record header check behind skipping a CHECKPOINT on an idle parent."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cygnet.wal import records

SEGMENT = 16 * 1024 * 1024


def _segment_with(tmp_path: Path, offset: int, total: int, info: int, rmid: int) -> Path:
    path = tmp_path / "000000010000000000000001"
    header = struct.pack("<IIQBBxxI", total, 0, 0x1511D18, info, rmid, 0)
    path.write_bytes(b"\0" * offset + header + b"\0" * 64)
    return path


@given(low_bits=st.integers(0, 0x0F), offset=st.integers(0, 4096))
def test_a_switch_record_is_found_whatever_its_low_info_bits(
        tmp_path_factory: pytest.TempPathFactory, low_bits: int, offset: int) -> None:
    base = tmp_path_factory.mktemp("wal")
    path = _segment_with(base, offset, 24, 0x40 | low_bits, 0)
    assert records.is_switch_at(path, offset)


@given(info=st.integers(0, 0xFF), rmid=st.integers(0, 0xFF))
def test_only_the_xlog_switch_record_counts(tmp_path_factory: pytest.TempPathFactory, info: int,
                                           rmid: int) -> None:
    base = tmp_path_factory.mktemp("wal")
    path = _segment_with(base, 0, 24, info, rmid)
    assert records.is_switch_at(path, 0) == (rmid == 0 and info & 0xF0 == 0x40)


def test_what_cannot_be_read_is_not_a_switch(tmp_path: Path) -> None:
    assert not records.is_switch_at(tmp_path / "missing", 0)
    path = _segment_with(tmp_path, 0, 24, 0x40, 0)
    assert not records.is_switch_at(path, path.stat().st_size - 8)  # a short read
    assert not records.is_switch_at(_segment_with(tmp_path, 0, 0, 0x40, 0), 0)  # zeros' length


@given(lsn=st.integers(0, 2**40))
def test_the_next_segment_starts_after_its_long_page_header(lsn: int) -> None:
    start = records.next_segment_start(lsn, SEGMENT)
    assert start % SEGMENT == records.LONG_PAGE_HEADER
    assert start // SEGMENT == lsn // SEGMENT + 1
