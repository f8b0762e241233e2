"""The host's lease file (agent/lease.py): the deadline the fence reads, and the TTL a
restarted cygnetd needs for its failsafe rounds before any coordinator answers."""

from __future__ import annotations

from pathlib import Path

from cygnet.agent import lease
from cygnet.agent.config import AgentConfig


def _config(tmp_path: Path) -> AgentConfig:
    return AgentConfig(pools=("p",), run_dir=tmp_path, coordinator="coord:7434")


def test_a_renewal_keeps_the_ttl_for_the_next_start(tmp_path: Path) -> None:
    first = lease.HostLease(_config(tmp_path))
    assert first.ttl == 0  # no lease yet: no failsafe round
    sent = lease.now_ns()
    first.renewed(sent, 6.0)
    assert lease.read_deadline(first.path) == lease.deadline_for(sent, 6.0)
    # The fence reads the first two fields; the TTL rides third.
    boot, deadline, ttl_ms = first.path.read_text().split()
    assert (boot, int(deadline), ttl_ms) == (lease.boot_id(), lease.deadline_for(sent, 6.0),
                                            "6000")
    restarted = lease.HostLease(_config(tmp_path))
    assert restarted.ttl == 6.0 and restarted.interval(5.0) == 2.0


def test_a_file_of_another_boot_or_an_older_cygnetd_has_no_ttl(tmp_path: Path) -> None:
    path = lease.lease_path(_config(tmp_path))
    path.write_text(f"{lease.boot_id()} {lease.now_ns() + 10**10}\n")  # two fields
    assert lease.read_deadline(path) > 0
    assert lease.HostLease(_config(tmp_path)).ttl == 0
    path.write_text(f"another-boot {lease.now_ns() + 10**10} 6000\n")
    assert lease.read_deadline(path) == 0
    assert lease.HostLease(_config(tmp_path)).ttl == 0
    for junk in ("", "x", f"{lease.boot_id()} 5 6000 7\n", f"{lease.boot_id()} five 6000\n"):
        path.write_text(junk)
        assert lease.read_deadline(path) == 0 and lease.HostLease(_config(tmp_path)).ttl == 0
