"""Real cygnet-coordinator processes for the benchmarks: a fleet in the store, gRPC clients,
the process's own CPU and memory from /proc.

Hosts are simulated: rows written as registrations write them (SqlStore.load),
heartbeating now, at addresses that refuse at once (a unix socket that does
not exist), so a new leader's catalog sync of every host fails fast instead
of waiting for timeouts.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grpc import aio

from cygnet.api.v1 import coordinator_pb2_grpc as cpb_grpc
from cygnet.coordinator.models import GB_UNIT, Capacity, PoolInfo, Registration
from cygnet.coordinator.store import open_store
from tests.e2e.fleet import Coordinator, Pki
from tests.harness import VENV_BIN, free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def fleet(hosts: int, seed: int = 7) -> Iterator[tuple[Registration, int, int]]:
    rng = random.Random(seed)
    for i in range(hosts):
        memory = rng.choice([64, 128, 256]) * GB_UNIT
        pool = rng.choice([2, 4, 8]) * 1024 * GB_UNIT
        cap = Capacity((PoolInfo("tank", pool, int(pool * rng.uniform(0.6, 0.95))),), memory, 0,
                       ("15", "16"), 0)
        reg = Registration(f"host-{i:05d}", f"unix:/nonexistent/host-{i:05d}", f"z{i % 4}",
                           {"rack": f"r{i % 50}"}, cap)
        yield reg, int(memory * 0.75), 400


def mark_alive(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with store.transaction() as tx:
            tx.x("UPDATE hosts SET last_heartbeat = ?, available = 1", time.time())
    finally:
        store.close()


def hold_lead_elsewhere(store_url: str) -> None:
    """A lease held by nobody real: a coordinator started now stays a follower
    and places through the store's placement transaction (the code before the index)."""
    store = open_store(store_url)
    try:
        with store.transaction() as tx:
            tx.x("DELETE FROM leadership")
            tx.x("INSERT INTO leadership (id, epoch, holder, lease_until) VALUES "
                 "(1, 1000000, 'benchmark/0/baseline', 1e12)")
    finally:
        store.close()


def free_lead(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with store.transaction() as tx:
            tx.x("UPDATE leadership SET lease_until = 0")
    finally:
        store.close()


class QuietCoordinator(Coordinator):
    """The tests' coordinator process, logging at INFO: DEBUG logs every call, and
    that would be measured too."""

    def start(self, timeout: float = 30.0) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        cert, key = self.pki.issue("coordinator", "coordinator", *[
            a.rpartition(":")[0] for a in self.listen])
        listen = ",".join([f"unix:{self.socket}", *self.listen])
        argv = [str(VENV_BIN / "cygnet-coordinator"), "--log-level", "INFO", "serve",
                "--listen", listen, "--store", self.store, "--tls-cert", str(cert),
                "--tls-key", str(key), "--tls-ca", str(self.pki.ca),
                "--role", "client/tester=admin", "--audit-log", str(self.audit_path),
                *self.extra_args]
        profile = os.environ.get("CYGNET_BENCH_PROFILE")
        if profile:  # where the coordinator's time goes: cProfile output to this file
            argv = [str(VENV_BIN / "python"), "-m", "cProfile", "-o", profile,
                    str(VENV_BIN / "cygnet-coordinator"), *argv[1:]]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coordinator did not start:\n{self.tail()}")
            time.sleep(0.05)


class Proc:
    """CPU seconds and resident memory of one process, from /proc/PID/stat."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def rss_mb(self) -> float:
        pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        return round(pages * PAGE / 2**20, 1)

    def wait_idle(self, below: float = 0.1, timeout: float = 120.0) -> None:
        """Until the process uses less than `below` of a core over half a second."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self.cpu()
            time.sleep(0.5)
            if (self.cpu() - before) / 0.5 < below:
                return


@contextmanager
def coordinator(base: Path, store_url: str, *extra: str, wait_index: bool = True
                ) -> Iterator[tuple[Coordinator, str]]:
    """One coordinator on TCP (mutual TLS); yields it and its address."""
    pki_dir = base / "pki"
    pki = Pki(pki_dir) if (pki_dir / "ca.pem").exists() else Pki.create(pki_dir)
    address = f"127.0.0.1:{free_port()}"
    c = QuietCoordinator(base / f"c-{time.monotonic_ns()}", pki, store_url, listen=[address],
                    extra_args=["--heartbeat-interval", "3600", *extra])
    c.start(timeout=60)
    try:
        if wait_index:
            # Leading (its index loaded), and done with the new leader's sync of every
            # host's catalog (seconds at 10,000 hosts, placements slowed meanwhile):
            # measured is the steady state after it.
            deadline = time.monotonic() + 300
            while "catalog sync of" not in c.tail(200):
                if time.monotonic() > deadline or (c.proc and c.proc.poll() is not None):
                    raise RuntimeError(f"coordinator did not lead:\n{c.tail()}")
                time.sleep(0.1)
        assert c.proc is not None
        Proc(c.proc.pid).wait_idle()
        yield c, address
    finally:
        c.stop()
        shutil.rmtree(c.base, ignore_errors=True)


def channel(c: Coordinator, address: str, name: str = "tester") -> aio.Channel:
    creds = c.pki.channel_credentials("client", name)
    return aio.secure_channel(address, creds)


def stub(ch: aio.Channel) -> cpb_grpc.CoordinatorStub:
    return cpb_grpc.CoordinatorStub(ch)  # type: ignore[no-untyped-call]
