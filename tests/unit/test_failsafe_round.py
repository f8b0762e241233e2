"""A failsafe round (agent/failsafe.py) decides per database: all confirmed renews the
host's lease; otherwise only the databases every replica of which confirmed get a
deadline of their own, which their primary's fence reads beside the lease."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cygnet.agent import failsafe, lease
from cygnet.agent.config import AgentConfig
from cygnet.api.v1 import agent_pb2 as pb

TTL = 6.0


class _Peers:
    """Replica hosts answering ConfirmPrimary: those in `silent` do not."""

    def __init__(self, silent: set[str]) -> None:
        self.silent = silent
        self.asked: list[tuple[str, str]] = []
        self.lifted: list[str] = []  # databases whose fence a round lifted

    def stub(self, address: str) -> Any:
        host = address.removeprefix("addr-")

        async def confirm(req: pb.ConfirmPrimaryRequest, timeout: float) -> Any:
            self.asked.append((req.database, host))
            if host in self.silent:
                raise OSError(f"{host} is cut off")
            return SimpleNamespace(host_id=host)
        return SimpleNamespace(ConfirmPrimary=confirm)


def _round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, primaries: dict[str, list[str]],
           silent: set[str], down: tuple[str, ...] = (),
           fenced: dict[str, list[str]] | None = None
           ) -> tuple[failsafe.Failsafe, _Peers, bool]:
    config = AgentConfig(pools=("p",), run_dir=tmp_path, coordinator="coord:7434")
    host_lease = lease.HostLease(config)
    host_lease.ttl = TTL
    peers = _Peers(silent)
    monkeypatch.setattr(failsafe, "replicated_primaries", lambda host: failsafe.Primaries(
        primaries, fenced or {}, {d: ["b"] for d in down}))

    async def lift(host: object, ids: list[str], by: str) -> None:
        # The fence goes only once the database's own deadline is ahead.
        assert all(lease.read_deadline(lease.failsafe_path(config, i)) > lease.now_ns()
                   for i in ids)
        peers.lifted.extend(ids)
    monkeypatch.setattr(lease, "lift_fences", lift)
    fs = failsafe.Failsafe(SimpleNamespace(config=config), host_lease, peers)  # type: ignore[arg-type]

    async def addresses(db_id: str) -> dict[str, str]:
        return {h: f"addr-{h}" for h in ("b", "c")}
    monkeypatch.setattr(fs, "_addresses", addresses)
    async def round_and_lifts() -> bool:
        renewed = await fs.round()
        if fs.lifting is not None:
            await fs.lifting
        return renewed
    return fs, peers, asyncio.run(round_and_lifts())


def test_all_confirmed_renews_the_host_lease(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fs, peers, renewed = _round(tmp_path, monkeypatch, {"db1": ["b"], "db2": ["b", "c"]},
                                set())
    assert renewed and fs.active
    assert lease.read_deadline(fs.lease.path) > lease.now_ns()
    assert sorted(peers.asked) == [("db1", "b"), ("db2", "b"), ("db2", "c")]
    assert not (tmp_path / lease.FAILSAFE_DIR).exists()


def test_a_cut_off_replica_fences_only_its_databases(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fs, _, renewed = _round(tmp_path, monkeypatch, {"db1": ["b"], "db2": ["b", "c"]}, {"c"})
    assert renewed and not fs.active
    assert lease.read_deadline(fs.lease.path) == 0  # the host's lease is not renewed
    db1 = lease.failsafe_path(fs.host.config, "db1")
    assert lease.now_ns() < lease.read_deadline(db1) <= lease.now_ns() + int(TTL * 2 / 3 * 1e9)
    assert lease.read_deadline(lease.failsafe_path(fs.host.config, "db2")) == 0


def test_nothing_confirmed_renews_nothing(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    stale = lease.failsafe_path(AgentConfig(pools=("p",), run_dir=tmp_path), "gone")
    lease.write_deadline(stale, 1, TTL)  # a database that is no primary here any more
    fs, _, renewed = _round(tmp_path, monkeypatch, {"db1": ["b"]}, {"b"})
    assert not renewed and not fs.active
    assert lease.read_deadline(fs.lease.path) == 0
    assert not lease.failsafe_path(fs.host.config, "db1").exists()
    assert not stale.exists()


def test_a_primary_found_down_keeps_the_host_lease_from_renewing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started again by the supervisor, it would write unconfirmed under a renewed host
    lease: the others keep writing on their own deadlines, and it starts fenced."""
    fs, peers, renewed = _round(tmp_path, monkeypatch, {"db1": ["b"]}, set(), down=("db2",))
    assert renewed and not fs.active
    assert peers.asked == [("db1", "b")]  # no lift of its fence restarts it: not asked
    assert lease.read_deadline(fs.lease.path) == 0
    assert lease.read_deadline(lease.failsafe_path(fs.host.config, "db1")) > lease.now_ns()
    assert not lease.failsafe_path(fs.host.config, "db2").exists()


def test_a_fenced_primary_all_replicas_confirm_writes_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its deadline passed while cygnetd restarted during the outage: the replicas'
    confirmation lifts its fence; one that a replica does not confirm stays fenced."""
    fs, peers, renewed = _round(tmp_path, monkeypatch, {}, {"c"},
                                fenced={"db1": ["b"], "db2": ["b", "c"]})
    assert renewed and not fs.active
    assert peers.lifted == ["db1"]
    assert lease.read_deadline(fs.lease.path) == 0  # the host's lease waits for a round
    assert lease.read_deadline(lease.failsafe_path(fs.host.config, "db2")) == 0
    assert sorted(peers.asked) == [("db1", "b"), ("db2", "b"), ("db2", "c")]


def test_a_fenced_primary_beside_confirmed_running_ones_keeps_the_lease_renewed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs, peers, renewed = _round(tmp_path, monkeypatch, {"db1": ["b"]}, {"c"},
                                fenced={"db2": ["c"]})
    assert renewed and fs.active
    assert lease.read_deadline(fs.lease.path) > lease.now_ns()
    assert peers.lifted == []


def test_a_primary_restarting_after_its_lift_is_asked_as_a_running_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the lift restarts its main, the database is found down: it is asked, and
    keeps its own deadline, so it does not fence again just after its start."""
    config = AgentConfig(pools=("p",), run_dir=tmp_path, coordinator="coord:7434")
    host_lease = lease.HostLease(config)
    host_lease.ttl = TTL
    peers = _Peers(set())
    monkeypatch.setattr(failsafe, "replicated_primaries", lambda host: failsafe.Primaries(
        {"db1": ["b"]}, {}, {"db2": ["c"]}))
    fs = failsafe.Failsafe(SimpleNamespace(config=config), host_lease, peers)  # type: ignore[arg-type]

    async def addresses(db_id: str) -> dict[str, str]:
        return {h: f"addr-{h}" for h in ("b", "c")}
    monkeypatch.setattr(fs, "_addresses", addresses)

    async def round_while_lifting() -> bool:
        fs.lifted, fs.lifting = {"db2"}, asyncio.create_task(asyncio.sleep(60))
        try:
            return await fs.round()
        finally:
            fs.lifting.cancel()

    assert asyncio.run(round_while_lifting()) and fs.active
    assert sorted(peers.asked) == [("db1", "b"), ("db2", "c")]
    assert lease.read_deadline(fs.lease.path) > lease.now_ns()

