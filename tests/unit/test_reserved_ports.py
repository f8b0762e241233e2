"""The Postgres port range kept out of the kernel's ephemeral ports (agent/reserved_ports.py).

`reserve` runs on a directory standing in for /proc/sys/net/ipv4; the daemon's
own start writes the real one (tests/integration/test_agent_api.py).
"""

from __future__ import annotations

import itertools
import logging
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cygnet.agent.reserved_ports import covered, format_spans, merged, parse_spans, reserve

ports = st.integers(1, 65535)
spans = st.lists(st.tuples(ports, ports).map(lambda t: (min(t), max(t))), max_size=8)


@given(spans)
def test_merged_spans_hold_the_same_ports_once_and_round_trip(given_spans: list[tuple[int, int]]
                                                              ) -> None:
    out = merged(given_spans)
    assert {p for lo, hi in out for p in range(lo, hi + 1)} == {
        p for lo, hi in given_spans for p in range(lo, hi + 1)}
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(out))
    assert parse_spans(format_spans(out)) == out
    assert all(covered(given_spans, s) for s in given_spans)


@pytest.mark.parametrize("text", ["x", "5-", "0", "9-3", "70000", "1-2-3"])
def test_a_malformed_list_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_spans(text)


def _proc(tmp_path: Path, reserved: str) -> Path:
    (tmp_path / "ip_local_port_range").write_text("32768\t60999\n")
    (tmp_path / "ip_local_reserved_ports").write_text(reserved + "\n")
    return tmp_path


@pytest.mark.parametrize(("before", "after"), [
    ("", "54000-54999"),
    ("7433,54500-55100", "7433,54000-55100"),
    ("53000-56000", "53000-56000"),  # already covered: not rewritten
])
def test_the_range_joins_what_was_reserved(tmp_path: Path, before: str, after: str) -> None:
    proc = _proc(tmp_path, before)
    reserve(54000, 54999, proc)
    assert (proc / "ip_local_reserved_ports").read_text().strip() == after


def test_a_range_outside_the_ephemeral_ports_is_left_alone(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "")
    reserve(6000, 6999, proc)
    reserve(61000, 61099, proc)
    assert (proc / "ip_local_reserved_ports").read_text().strip() == ""


def test_an_unwritable_setting_warns_and_the_start_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proc = _proc(tmp_path, "")
    (proc / "ip_local_reserved_ports").unlink()
    (proc / "ip_local_reserved_ports").mkdir()  # unreadable as a file, even for root
    (proc / "ip_local_reserved_ports").chmod(stat.S_IRUSR)
    with caplog.at_level(logging.WARNING, "cygnet.agent.reserved_ports"):
        reserve(54000, 54999, proc)
    assert "net.ipv4.ip_local_reserved_ports" in caplog.text
    assert "54000-54999" in caplog.text
