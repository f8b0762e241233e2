"""Agent logic that needs no daemon: request ids, wire decoding, configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cygnet.agent.config import AgentConfig, load_config
from cygnet.agent.idempotency import RequestLog
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.errors import Aborted, AlreadyExists, InvalidArgument
from cygnet.rpc.wire import bad_utf8_field, decode


def test_request_log_returns_first_result_and_joins_duplicates() -> None:
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return calls

    async def go() -> None:
        log = RequestLog()
        a, b = await asyncio.gather(log.run("r1", "M", work), log.run("r1", "M", work))
        assert a == b == 1
        assert await log.run("r1", "M", work) == 1
        assert await log.run("", "M", work) == 2  # no id, no dedup
        with pytest.raises(InvalidArgument, match="already used for M"):
            await log.run("r1", "Other", work)

    asyncio.run(go())


def test_request_log_keeps_every_failure_as_the_answer() -> None:
    attempts = {"final": 0, "aborted": 0, "bug": 0}

    async def final() -> None:
        attempts["final"] += 1
        raise AlreadyExists("x")

    async def aborted() -> None:
        attempts["aborted"] += 1
        raise Aborted("postmaster exited during startup")

    async def bug() -> None:
        attempts["bug"] += 1
        raise RuntimeError("unexpected")

    async def go() -> None:
        log = RequestLog()
        for _ in range(3):
            with pytest.raises(AlreadyExists):
                await log.run("f", "M", final)
            with pytest.raises(Aborted):
                await log.run("a", "M", aborted)
            with pytest.raises(RuntimeError):
                await log.run("b", "M", bug)

    asyncio.run(go())
    # A retry returns the first outcome, failure included, without running again.
    assert attempts == {"final": 1, "aborted": 1, "bug": 1}


def test_request_log_is_bounded() -> None:
    async def go() -> None:
        log = RequestLog(capacity=3)
        for i in range(10):
            await log.run(f"r{i}", "M", lambda: asyncio.sleep(0))
        assert len(log._entries) == 3

    asyncio.run(go())


@given(st.text(max_size=20), st.binary(min_size=1, max_size=8))
def test_bad_utf8_is_found_in_nested_fields(name: str, junk: bytes) -> None:
    good = pb.DeleteBranchRequest(branch=pb.BranchRef(database="d", name=name)).SerializeToString()
    assert bad_utf8_field(pb.DeleteBranchRequest.DESCRIPTOR, good) is None
    bad_tail = b"\xff" + junk
    nested = b"\x1a" + bytes([len(bad_tail)]) + bad_tail  # BranchRef.name = field 3
    raw = b"\x0a" + bytes([len(nested)]) + nested  # DeleteBranchRequest.branch = field 1
    assert bad_utf8_field(pb.DeleteBranchRequest.DESCRIPTOR, raw) == "branch.name"
    with pytest.raises(InvalidArgument) as err:
        decode(pb.DeleteBranchRequest.FromString, raw)
    assert err.value.field == "branch.name"


def test_config_file_and_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "cygnetd.toml"
    cfg.write_text('pools = ["tank"]\nport_min = 60000\nport_max = 60010\n')
    config = load_config(cfg, {"advertise_host": "db1.example", "listen": None})
    assert config.pools == ("tank",) and config.port_min == 60000
    # None on the command line means "not given": the default stays.
    assert config.advertise_host == "db1.example" and config.listen == AgentConfig.listen
    with pytest.raises(InvalidArgument, match="unknown settings: colour"):
        load_config(None, {"pools": ["x"], "colour": "blue"})
    with pytest.raises(InvalidArgument, match="pools"):
        load_config(None, {})
    with pytest.raises(InvalidArgument, match="port_range"):
        load_config(None, {"pools": ["x"], "port_min": 70000, "port_max": 70001})
    cfg.write_text("pools = [")
    with pytest.raises(InvalidArgument) as err:
        load_config(cfg, {})
    assert err.value.field == "config"


def test_recovery_shared_buffers_only_ever_raise_a_size_class() -> None:
    from cygnet.agent.recovery import replay_size
    from cygnet.postgres.sizes import size_class

    nano, large = size_class("nano"), size_class("large")
    assert replay_size(1024, nano).shared_buffers_mb == 1024
    assert replay_size(1024, nano).max_connections == nano.max_connections
    assert replay_size(1024, large) == large  # 2 GB already
    assert replay_size(0, nano) == nano
    with pytest.raises(InvalidArgument) as err:
        AgentConfig(pools=("tank",), recovery_shared_buffers_mb=-1).validate()
    assert err.value.field == "recovery_shared_buffers_mb"
