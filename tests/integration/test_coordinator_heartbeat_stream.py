"""HeartbeatStream on a real cygnet-coordinator process, over mutual TLS.

A heartbeat on the stream must do exactly what a unary Heartbeat does (liveness
and capacity in the store and the index), and the stream is bound to the host
of its certificate: a message naming another host ends it.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.api.v1 import coordinator_pb2_grpc as cpb_grpc
from cygnet.coordinator.store import open_store
from tests.e2e.fleet import Coordinator, Pki

pytestmark = pytest.mark.integration

GB = 1024**3


def cap(free_gb: int, running: int) -> cpb.HostCapacity:
    return cpb.HostCapacity(
        pools=[apb.Pool(name="tank", size_bytes=512 * GB, free_bytes=free_gb * GB,
                        used_bytes=(512 - free_gb) * GB)],
        memory_bytes=64 * GB, running_clusters=running, postgres_versions=["15", "16"],
        database_count=running)


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    base = tmp_path_factory.mktemp("hbstream")
    (base / "revoked").touch()
    c = Coordinator(base / "c", Pki.create(base / "pki"), f"sqlite:///{base}/store.db",
                    extra_args=["--heartbeat-interval", "30", "--revoked", str(base / "revoked")])
    c.start()
    try:
        yield c
    finally:
        c.stop()


def host_stub(c: Coordinator, name: str) -> tuple[grpc.Channel, cpb_grpc.CoordinatorStub]:
    creds = c.pki.channel_credentials("host", name)
    ch = grpc.secure_channel(f"unix:{c.socket}", creds,
                             options=[("grpc.ssl_target_name_override", "localhost")])
    return ch, cpb_grpc.CoordinatorStub(ch)  # type: ignore[no-untyped-call]


def register(c: Coordinator, name: str) -> None:
    ch, stub = host_stub(c, name)
    with ch:
        stub.RegisterHost(cpb.RegisterHostRequest(
            host_id=name, address=f"unix:/nonexistent/{name}", zone="z1",
            capacity=cap(500, 0), version="test"), timeout=10)


def mark_down(c: Coordinator, *names: str) -> None:
    """As the leader's housekeeping marks a silent host."""
    store = open_store(c.store)
    try:
        with store.transaction() as tx:
            for name in names:
                tx.x("UPDATE hosts SET available = 0 WHERE id = ?", name)
    finally:
        store.close()


def get_host(c: Coordinator, name: str) -> cpb.FleetHost:
    with c.stub() as stub:
        host: cpb.FleetHost = stub.GetHost(cpb.GetHostRequest(host_id=name), timeout=10)
    return host


def test_stream_heartbeat_does_what_a_unary_one_does(coord: Coordinator) -> None:
    register(coord, "hs-stream")
    register(coord, "hs-unary")
    mark_down(coord, "hs-stream", "hs-unary")
    assert get_host(coord, "hs-stream").state == cpb.HOST_STATE_UNAVAILABLE
    before = time.time()
    beats = [cap(400, 3), cap(300, 5)]
    ch, stub = host_stub(coord, "hs-stream")
    with ch:
        answers = list(stub.HeartbeatStream(
            iter([cpb.HeartbeatRequest(host_id="hs-stream", capacity=b) for b in beats]),
            timeout=10))
    assert [a.heartbeat_interval_seconds for a in answers] == [30.0, 30.0]
    ch, stub = host_stub(coord, "hs-unary")
    with ch:
        stub.Heartbeat(cpb.HeartbeatRequest(host_id="hs-unary", capacity=beats[-1]), timeout=10)
    streamed, unary = get_host(coord, "hs-stream"), get_host(coord, "hs-unary")
    assert streamed.state == cpb.HOST_STATE_AVAILABLE
    assert streamed.last_heartbeat.ToNanoseconds() / 1e9 >= before - 1
    assert streamed.capacity == beats[-1]  # the last message counts
    # Everything but the host's own identity is what the unary heartbeat recorded.
    for field in ("id", "address", "last_heartbeat"):
        streamed.ClearField(field)
        unary.ClearField(field)
    assert streamed == unary


def test_a_stream_is_bound_to_its_certificates_host(coord: Coordinator) -> None:
    register(coord, "hs-own")
    register(coord, "hs-other")
    ch, stub = host_stub(coord, "hs-own")
    with ch:
        replies = stub.HeartbeatStream(iter([
            cpb.HeartbeatRequest(host_id="hs-own", capacity=cap(500, 0)),
            cpb.HeartbeatRequest(host_id="hs-other", capacity=cap(1, 99))]), timeout=10)
        assert next(replies).heartbeat_interval_seconds == 30.0
        with pytest.raises(grpc.RpcError) as err:
            next(replies)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "hs-other" in (err.value.details() or "")
        # Refused before the store is asked, even for a host id nobody has.
        with pytest.raises(grpc.RpcError) as err:
            list(stub.HeartbeatStream(iter([cpb.HeartbeatRequest(host_id="hs-own-x")]),
                                      timeout=10))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A host certificate whose host never registered: NOT_FOUND, so it registers.
    ch, stub = host_stub(coord, "hs-ghost")
    with ch:
        with pytest.raises(grpc.RpcError) as err:
            list(stub.HeartbeatStream(iter([cpb.HeartbeatRequest(host_id="hs-ghost")]),
                                      timeout=10))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            list(stub.HeartbeatStream(iter([cpb.HeartbeatRequest()]), timeout=10))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "host_id" in (err.value.details() or "")
    # The other host was not touched by the refused message.
    assert get_host(coord, "hs-other").capacity == cap(500, 0)
    # A client certificate may not open the stream at all.
    with coord.stub() as s, pytest.raises(grpc.RpcError) as err:
        list(s.HeartbeatStream(iter([cpb.HeartbeatRequest(host_id="hs-own")]), timeout=10))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not call HeartbeatStream" in (err.value.details() or "")


def test_a_certificate_revoked_mid_stream_is_refused_at_its_next_message(
        coord: Coordinator) -> None:
    register(coord, "hs-rev")
    pending: queue.Queue[cpb.HeartbeatRequest | None] = queue.Queue()

    def messages() -> Iterator[cpb.HeartbeatRequest]:
        while (item := pending.get(timeout=10)) is not None:
            yield item

    beat = cpb.HeartbeatRequest(host_id="hs-rev", capacity=cap(500, 0))
    ch, stub = host_stub(coord, "hs-rev")
    revoked = coord.base.parent / "revoked"
    try:
        with ch:
            replies = stub.HeartbeatStream(messages(), timeout=10)
            pending.put(beat)
            assert next(replies).heartbeat_interval_seconds == 30.0
            revoked.write_text("host/hs-rev\n")
            pending.put(beat)
            with pytest.raises(grpc.RpcError) as err:
                next(replies)
            pending.put(None)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in (err.value.details() or "")
    finally:
        revoked.write_text("")
