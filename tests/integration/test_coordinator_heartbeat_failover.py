"""A real cygnetd's heartbeat stream follows a leader change between coordinator processes.

Two cygnet-coordinator processes share one store; cygnetd lists both. Its
stream goes to the first (the leader). Killed with -9, the stream breaks, and
cygnetd opens one to the other coordinator, which takes the lease: the host
never goes unavailable there, and its fence deadline (the lease file every
replicated primary's cygnet_fence reads, docs/ha.md) never passes, so a
coordinator failover fences no primary.

A coordinator older than HeartbeatStream answers it UNIMPLEMENTED; cygnetd then
beats with the unary Heartbeat RPC, without re-registering or giving up.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from cygnet.agent import lease
from cygnet.api.v1 import coordinator_pb2 as cpb
from tests.e2e.fleet import Coordinator, Pki, wait_for
from tests.harness import free_port, private_daemon

pytestmark = pytest.mark.integration

INTERVAL = 0.5  # the coordinators' heartbeat_interval, which cygnetd follows


@contextlib.contextmanager
def coordinators(base: Path, pki: Pki, n: int) -> Iterator[list[Coordinator]]:
    store = f"sqlite:///{base}/store.db"
    procs = [Coordinator(base / f"c{i}", pki, store, listen=[f"127.0.0.1:{free_port()}"],
                         extra_args=["--heartbeat-interval", str(INTERVAL),
                                     "--lease-ttl", "1"]) for i in range(n)]
    try:
        first = procs[0]
        first.start()
        wait_for(lambda: "took leadership" in first.tail(400), 15, "a leader")  # the first leads
        for c in procs[1:]:
            c.start()
        yield procs
    finally:
        for c in procs:
            c.stop()


def last_beat(c: Coordinator, host: str) -> tuple[float, int]:
    with c.stub() as stub:
        h = stub.GetHost(cpb.GetHostRequest(host_id=host), timeout=5)
    return h.last_heartbeat.ToNanoseconds() / 1e9, h.state


def test_cygnetd_follows_a_leader_change_on_its_stream(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    cert, key = pki.issue("host", "hb-follow")
    with coordinators(tmp_path, pki, 2) as (first, second):
        addresses = ",".join(c.listen[0] for c in (first, second))
        settings = (f'host_id = "hb-follow"\ncoordinator = "{addresses}"\n'
                    f'coordinator_ca = "{pki.ca}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
                    'advertise_api = "unix:/nonexistent/hb-follow"\n')
        with private_daemon("hbf", 62600, "1G", settings=settings, unix_only=True) as d:
            opened = f"heartbeat stream opened to coordinator {first.listen[0]}"
            wait_for(lambda: opened in d.tail(400), 30, "a stream to the first coordinator")
            start = time.time()
            wait_for(lambda: last_beat(first, "hb-follow")[0] > start, 10, "a streamed beat")
            assert first.proc is not None
            lease_file = d.base / "run" / lease.LEASE_FILE
            margins: list[int] = []  # deadline minus now, sampled through the failover
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.is_set():
                    margins.append(lease.read_deadline(lease_file) - lease.now_ns())
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            first.proc.kill()
            first.proc.wait()
            killed = time.time()
            try:
                moved = f"heartbeat stream opened to coordinator {second.listen[0]}"
                wait_for(lambda: moved in d.tail(400), 15, "a stream to the second coordinator")
                wait_for(lambda: "took leadership" in second.tail(400), 15, "a new leader")
                # Beats keep coming past the time after which the new leader would mark
                # the host down (3 missed heartbeats).
                wait_for(lambda: last_beat(second, "hb-follow")[0] > killed + 4 * INTERVAL, 15,
                         "beats on the new stream")
            finally:
                sampling.set()
                sampler.join()
            assert len(margins) > 20 and min(margins) > 0, \
                f"the fence deadline passed during the coordinator failover: {min(margins)} ns"
            print(f"coordinator failover: the fence deadline stayed at least "
                  f"{min(margins) / 1e9:.2f}s ahead")
            assert last_beat(second, "hb-follow")[1] == cpb.HOST_STATE_AVAILABLE
            log = d.tail(400)
            assert "unary heartbeats" not in log  # the stream, not the fallback
            assert "heartbeat failed" not in log  # a broken stream is no internal error
            # A coordinator stopping cleanly ends its streams rather than waiting on them.
            second.stop()
            wait_for(lambda: f"coordinator {second.listen[0]}: " in d.tail(400), 15,
                     "the stream's end")
            assert "Traceback" not in second.tail(2000)


def unary(method: Callable[..., object], request: type, response: type
          ) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=request.FromString,  # type: ignore[attr-defined]
        response_serializer=response.SerializeToString)  # type: ignore[attr-defined]


@contextlib.contextmanager
def older_coordinator(pki: Pki, calls: Counter[str]) -> Iterator[str]:
    """A real gRPC server over mutual TLS with the Coordinator service as it was before
    HeartbeatStream: RegisterHost and Heartbeat only, so gRPC itself answers the stream
    UNIMPLEMENTED, as a coordinator of that version does."""
    cert, key = pki.issue("coordinator", "old-coordinator", "127.0.0.1")

    def register(req: cpb.RegisterHostRequest, _: grpc.ServicerContext
                 ) -> cpb.RegisterHostResponse:
        calls["RegisterHost"] += 1
        return cpb.RegisterHostResponse(heartbeat_interval_seconds=INTERVAL)

    def heartbeat(req: cpb.HeartbeatRequest, _: grpc.ServicerContext
                  ) -> cpb.HeartbeatResponse:
        calls["Heartbeat"] += 1
        return cpb.HeartbeatResponse(heartbeat_interval_seconds=INTERVAL)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "cygnet.v1.Coordinator", {
            "RegisterHost": unary(register, cpb.RegisterHostRequest, cpb.RegisterHostResponse),
            "Heartbeat": unary(heartbeat, cpb.HeartbeatRequest, cpb.HeartbeatResponse)}),))
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())],
                                        root_certificates=pki.ca.read_bytes(),
                                        require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_cygnetd_beats_unary_to_a_coordinator_without_the_stream(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    cert, key = pki.issue("host", "hb-old")
    calls: Counter[str] = Counter()
    with older_coordinator(pki, calls) as address:
        settings = (f'host_id = "hb-old"\ncoordinator = "{address}"\n'
                    f'coordinator_ca = "{pki.ca}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
                    'advertise_api = "unix:/nonexistent/hb-old"\n')
        with private_daemon("hbf", 62600, "1G", settings=settings, unix_only=True) as d:
            wait_for(lambda: calls["Heartbeat"] >= 5, 30, "five unary heartbeats")
            log = d.tail(400)
    assert calls["RegisterHost"] == 1  # the refused stream is no reason to register again
    fallback = f"coordinator {address} has no heartbeat stream: unary heartbeats"
    assert log.count(fallback) == 1, log  # asked once, not again on every beat
    assert "heartbeat failed" not in log
