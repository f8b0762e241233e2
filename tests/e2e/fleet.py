"""Real parts for fleet tests: certificates, a cygnet-coordinator process, network namespaces."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc

from cygnet import pki
from cygnet.api.v1 import coordinator_pb2 as cpb
from cygnet.api.v1 import coordinator_pb2_grpc as cpb_grpc
from tests.harness import (
    VENV_BIN,
    WORK,
    Daemon,
    FilePool,
    kill_postmasters_under,
    run,
)


@dataclass
class Pki:
    """A fleet CA in `dir`, and certificates issued on demand."""

    dir: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        pki.init_ca(directory)
        return cls(directory)

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def issue(self, role: str, name: str, *sans: str) -> tuple[Path, Path]:
        files = pki.issue(self.dir, role, name, list(sans))
        return files.cert, files.key

    def channel_credentials(self, role: str, name: str) -> grpc.ChannelCredentials:
        cert, key = self.issue(role, name) if not (self.dir / f"{name}.pem").exists() else (
            self.dir / f"{name}.pem", self.dir / f"{name}.key")
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), key.read_bytes(),
                                            cert.read_bytes())


@dataclass
class Coordinator:
    """One cygnet-coordinator process; `socket` is a mutual-TLS unix socket for the test."""

    base: Path
    pki: Pki
    store: str
    listen: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.base / "coordinator.sock"

    @property
    def log_path(self) -> Path:
        return self.base / "coordinator.log"

    @property
    def audit_path(self) -> Path:
        return self.base / "audit.log"

    def start(self, timeout: float = 30.0) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)  # a killed coordinator's: not a sign of this one
        cert, key = self.pki.issue("coordinator", "coordinator", *[
            a.rpartition(":")[0] for a in self.listen])
        listen = ",".join([f"unix:{self.socket}", *self.listen])
        argv = [str(VENV_BIN / "cygnet-coordinator"), "--log-level", "DEBUG", "serve",
                "--listen", listen, "--store", self.store, "--tls-cert", str(cert),
                "--tls-key", str(key), "--tls-ca", str(self.pki.ca),
                # The test's own client certificate (stub()) administers the fleet.
                "--role", "client/tester=admin", "--role", "client/viewer=reader",
                "--audit-log", str(self.audit_path),
                *self.extra_args]
        prefix = ["nsenter", f"--net=/var/run/netns/{self.netns}"] if self.netns else []
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*prefix, *argv], stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coordinator did not start:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        return ""

    @contextlib.contextmanager
    def stub(self, role: str = "client", name: str = "tester"
             ) -> Iterator[cpb_grpc.CoordinatorStub]:
        creds = self.pki.channel_credentials(role, name)
        with grpc.secure_channel(f"unix:{self.socket}", creds,
                                 options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
            yield cpb_grpc.CoordinatorStub(ch)  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Lan:
    """Network namespaces joined by a bridge that lives in a namespace of its own.

    Addresses (10.77.0.0/24) exist only inside the namespaces; the machine's own
    network is untouched. `close` deletes every namespace, and their links with them.
    """

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    nodes: dict[str, str] = field(default_factory=dict)  # name -> address

    @property
    def hub(self) -> str:
        return f"cy{self.tag}-lan"

    def ns(self, node: str) -> str:
        return f"cy{self.tag}-{node}"

    def open(self) -> Lan:
        run("ip", "netns", "add", self.hub)
        run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.hub, "link", "set", "br0", "up")
        return self

    def add(self, node: str) -> str:
        index = len(self.nodes) + 1
        address = f"10.77.0.{10 + index}"
        ns, outer = self.ns(node), f"v{self.tag}{index}"
        run("ip", "netns", "add", ns)
        self.nodes[node] = address
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", outer,
            "netns", self.hub)
        run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", self.hub, "link", "set", outer, "master", "br0")
        run("ip", "-n", self.hub, "link", "set", outer, "up")
        return address

    def close(self) -> None:
        for node in self.nodes:
            run("ip", "netns", "del", self.ns(node), check=False)
        run("ip", "netns", "del", self.hub, check=False)


@dataclass
class HostFleet:
    """Hosts (cygnetd each in its own namespace, pool and address) and a coordinator."""

    lan: Lan
    pki: Pki
    coordinator: Coordinator
    daemons: dict[str, Daemon]

    def hosts(self) -> dict[str, cpb.FleetHost]:
        with self.coordinator.stub() as c:
            return {h.id: h for h in c.ListHosts(cpb.ListHostsRequest(), timeout=10).hosts}

    def all_available(self) -> bool:
        """Whether the coordinator sees each of this fleet's daemons available (hosts
        a test registered that never ran are not asked about)."""
        hosts = self.hosts()
        return all(hosts[h].state == cpb.HOST_STATE_AVAILABLE
                   for h in self.daemons)


@contextlib.contextmanager
def host_fleet(names: tuple[str, ...] = ("h1", "h2", "h3"), *, port_base: int = 59000,
               pool_size: str = "3G", heartbeat: int = 1,
               coordinator_args: tuple[str, ...] = (),
               daemon_args: tuple[str, ...] = (),
               host_args: dict[str, tuple[str, ...]] | None = None) -> Iterator[HostFleet]:
    """A fleet on a LAN of namespaces: one node per host, the coordinator and a client
    (`lan.ns("client")`), `host_args` added to the named hosts' flags. Everything is
    stopped and removed on exit."""
    lan = Lan().open()
    base = WORK / f"e2e-{lan.tag}"
    daemons: dict[str, Daemon] = {}
    coordinator: Coordinator | None = None
    try:
        pki = Pki.create(base / "pki")
        addr = lan.add("coord")
        lan.add("client")
        coordinator = Coordinator(
            base / "coord", pki, f"sqlite:///{base}/coord/state.db", listen=[f"{addr}:7434"],
            extra_args=["--heartbeat-interval", str(heartbeat), "--missed-heartbeats", "3",
                        *coordinator_args],
            netns=lan.ns("coord"))
        coordinator.start()
        for i, name in enumerate(names):
            address = lan.add(name)
            cert, key = pki.issue("host", name, address)
            d = Daemon(FilePool.create(pool_size), WORK / f"e2e-{lan.tag}-{name}",
                       port_min=port_base + 200 * i, netns=lan.ns(name))
            d.extra_args = [
                "--listen", f"{address}:7433", "--advertise-host", address,
                "--postgres-listen", address, "--host-id", name, "--coordinator",
                f"{addr}:7434", "--coordinator-ca", str(pki.ca), "--tls-cert", str(cert),
                "--tls-key", str(key), "--tls-client-ca", str(pki.ca), *daemon_args,
                *(host_args or {}).get(name, ())]
            daemons[name] = d
        # One after the other: zfs-fuse (one daemon for every pool on the machine)
        # twice stopped answering when several cygnetds made their first datasets
        # at once; a real host has one cygnetd.
        for d in daemons.values():
            d.start()
        f = HostFleet(lan, pki, coordinator, daemons)
        wait_for(lambda: len(f.hosts()) == len(names), 30, "every host registered")
        yield f
    finally:
        if coordinator is not None:
            coordinator.stop()
        for d in daemons.values():
            d.stop()
        for d in daemons.values():
            kill_postmasters_under(d.base)
            # Postgres' logs live on the pool: kept beside cygnetd's for a failed run.
            for pglog in d.mount_root.glob("*/db/*/*/log/postgres.log"):
                with contextlib.suppress(OSError):
                    shutil.copyfile(pglog, d.base / f"postgres-{pglog.parent.parent.name}.log")
            d.pool.destroy(d.mount_root)
        lan.close()


def enter_netns(name: str) -> None:
    """Moves the calling thread (only) into a network namespace: a thread pool made with
    this as initializer talks to the fleet's addresses from the test process."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns into {name}")
    finally:
        os.close(fd)


def endpoint_uri(f: HostFleet, uri: str, name: str, hosts: list[str], extra: str = "") -> str:
    """`uri` (a database's string) pointed at the endpoints of `hosts`, in that order,
    routed to endpoint `name`, with `extra` query parameters ("&key=value")."""
    parts = urlsplit(uri)
    userinfo = parts.netloc.rpartition("@")[0]
    where = ",".join(f"{f.lan.nodes[h]}:{f.daemons[h].endpoint_port}" for h in hosts)
    dropped = ("target_session_attrs", "connect_timeout", "options")
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith(dropped))
    query += f"&options=endpoint%3D{name}{extra}&connect_timeout=2"
    return urlunsplit((parts.scheme, f"{userinfo}@{where}", parts.path, query, ""))
