"""Real parts for tests: file-backed zfs-fuse pools and a real cygnetd process."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from cygnet.zfs import mount_lock
from tests.leftovers import destroy_pool, join_run

REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("CYGNET_TEST_DIR", "/var/tmp/cygnet-test"))
VENV_BIN = Path(sys.executable).parent


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # zfs commands that mount queue behind the daemons' (zfs/mount_lock.py).
    return subprocess.run(mount_lock.wrapped(argv), capture_output=True, text=True,
                          check=check, timeout=120)


def run_small_benchmark(module: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """A benchmark's small mode, run as a user would (`python -m benchmarks.MODULE
    --small ARGS`); fails with the end of its stderr, returns the JSON it printed."""
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--small", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def ensure_zfs() -> None:
    subprocess.run([str(REPO / "scripts" / "start-zfs")], check=True, timeout=60)


# Below the kernel's ephemeral range (32768-60999 here): a port picked here stays
# free until its test binds it, where an outgoing connection could take a port
# the kernel handed out (a test may bind minutes after it picked).
FREE_PORTS = range(20000, 32000)


def free_ports(count: int) -> list[int]:
    """`count` distinct ports in FREE_PORTS that nothing listens on right now (each
    is held until all are found, so none is picked twice)."""
    held: list[socket.socket] = []
    start = secrets.randbelow(len(FREE_PORTS))
    try:
        for i in range(len(FREE_PORTS)):
            s = socket.socket()
            try:
                s.bind(("0.0.0.0", FREE_PORTS[(start + i) % len(FREE_PORTS)]))
            except OSError:
                s.close()
                continue
            held.append(s)
            if len(held) == count:  # (checked after the bind: the range's last port counts)
                return [int(h.getsockname()[1]) for h in held]
    finally:
        for s in held:
            s.close()
    raise RuntimeError(f"no {count} free ports in {FREE_PORTS.start}-{FREE_PORTS.stop - 1}")


def free_port() -> int:
    """A port in FREE_PORTS that nothing listens on right now."""
    return free_ports(1)[0]


@dataclass
class FilePool:
    name: str
    image: Path

    @classmethod
    def create(cls, size: str = "4G") -> FilePool:
        ensure_zfs()
        join_run(WORK)
        name = "cyt" + secrets.token_hex(4)
        image = WORK / "pools" / f"{name}.img"
        image.parent.mkdir(parents=True, exist_ok=True)
        run("truncate", "-s", size, str(image))
        # Out of the pool cache: a restarted zfs-fuse must not import a killed run's pool.
        run("zpool", "create", "-o", "cachefile=none", "-m", "none", name, str(image))
        return cls(name, image)

    def datasets(self) -> list[str]:
        out = run("zfs", "list", "-H", "-t", "all", "-o", "name", "-r", self.name).stdout
        return out.split()

    def destroy(self, mount_root: Path | None = None) -> None:
        if mount_root is not None:
            kill_postmasters_under(mount_root)
        destroy_pool(self.name, tries=50)
        self.image.unlink(missing_ok=True)


def postmasters_under(root: Path) -> list[int]:
    """Pids of postgres processes whose working directory is below `root`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            if Path(os.readlink(entry / "cwd")).is_relative_to(root):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def postmaster_pids(root: Path) -> set[int]:
    """Postmasters (not their backends) running on data below `root`."""
    pids = set(postgres_under := postmasters_under(root))
    out = set()
    for pid in postgres_under:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid not in pids:
            out.add(pid)
    return out


def kill_postmasters_under(root: Path) -> None:
    for pid in postmasters_under(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + 10
    while postmasters_under(root) and time.monotonic() < deadline:
        time.sleep(0.05)


# Client certificates of the test fleet and the role each daemon gives them.
CLIENT_ROLES = {"admin": "admin", "operator": "operator", "reader": "reader",
                "revokee": "admin", "nobody": ""}


@dataclass(frozen=True)
class FleetPki:
    """A fleet CA and client certificates (ROLE/NAME common names), made by cygnet.pki."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def pair(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def key_and_chain(self, name: str) -> tuple[bytes, bytes]:
        cert, key = self.pair(name)
        return key.read_bytes(), cert.read_bytes()


@functools.cache
def fleet_pki() -> FleetPki:
    """Made once per test session; daemons require these client certificates on TCP."""
    from cygnet import pki

    directory = WORK / "pki" / f"run-{os.getpid()}-{secrets.token_hex(3)}"
    pki.init_ca(directory)
    for name in CLIENT_ROLES:
        pki.issue(directory, "client", name, [])
    atexit.register(shutil.rmtree, directory, True)
    return FleetPki(directory)


@dataclass
class Daemon:
    """One cygnetd process with its own pool, directories and ports."""

    pool: FilePool
    base: Path
    port_min: int
    listen_port: int = field(default_factory=free_port)
    # The Postgres endpoint's port (docs/endpoints.md): one per daemon, not 5432.
    endpoint_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # Appended to the command line: later options override the defaults above.
    extra_args: list[str] = field(default_factory=list)
    # Run inside this network namespace (see /var/run/netns).
    netns: str | None = None

    @property
    def socket(self) -> Path:
        return self.base / "run" / "cygnetd.sock"

    @property
    def mount_root(self) -> Path:
        return self.base / "mnt"

    @property
    def log_path(self) -> Path:
        return self.base / "cygnetd.log"

    @property
    def config_path(self) -> Path:
        return self.base / "cygnetd-auth.toml"

    @property
    def audit_path(self) -> Path:
        return self.base / "audit.log"

    @property
    def revoked_path(self) -> Path:
        return self.base / "revoked"

    @property
    def server_ca(self) -> Path:
        """The CA of the listener's own (generated) certificate."""
        return self.base / "state" / "tls" / "ca.pem"

    @property
    def client_ca(self) -> Path:
        """This daemon's copy of the test fleet CA (a test may change it)."""
        return self.base / "client-ca.pem"

    def write_auth_config(self) -> None:
        """Roles for the test fleet's clients, the audit file and an empty deny list."""
        shutil.copyfile(fleet_pki().ca, self.client_ca)
        roles = "\n".join(f'"client/{name}" = "{role}"'
                          for name, role in CLIENT_ROLES.items() if role)
        self.revoked_path.touch()
        # Branches are never suspended for idleness unless a test asks for it
        # (cygnet:suspend-after); idle branches are looked for often.
        self.config_path.write_text(f'audit_log = "{self.audit_path}"\n'
                                    f'revoked = "{self.revoked_path}"\n'
                                    'suspend_after = 0.0\nidle_check_interval = 0.2\n'
                                    # A stopped daemon's relay process leaves soon.
                                    'endpoint_relay_linger = 2.0\n'
                                    f'[roles]\n{roles}\n')

    def tls_channel(self, client: str | None = "admin", host: str = "127.0.0.1"
                    ) -> grpc.Channel:
        """A channel to the TCP listener with a test fleet client certificate (None: none)."""
        pair = fleet_pki().key_and_chain(client) if client else (None, None)
        creds = grpc.ssl_channel_credentials(self.server_ca.read_bytes(), *pair)
        return grpc.secure_channel(f"{host}:{self.listen_port}", creds)

    def argv(self) -> list[str]:
        self.base.mkdir(parents=True, exist_ok=True)
        self.write_auth_config()  # the command line names it
        return [str(VENV_BIN / "cygnetd"), "--pool", self.pool.name,
                "--socket", str(self.socket), "--run-dir", str(self.base / "run"),
                "--state-dir", str(self.base / "state"), "--mount-root", str(self.mount_root),
                "--listen", f"127.0.0.1:{self.listen_port}", "--config", str(self.config_path),
                "--tls-client-ca", str(self.client_ca),
                "--port-range", f"{self.port_min}-{self.port_min + 199}",
                "--postgres-listen", "127.0.0.1", "--endpoint-port", str(self.endpoint_port),
                "--log-level", "DEBUG", *self.extra_args]

    def start(self, timeout: float = 120.0) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        # nsenter, not `ip netns exec`: only the network namespace changes, so ZFS
        # mounts stay in the machine's mount namespace.
        prefix = ["nsenter", f"--net=/var/run/netns/{self.netns}"] if self.netns else []
        self.proc = subprocess.Popen([*prefix, *self.argv()], stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        self.wait_serving(timeout)

    def wait_serving(self, timeout: float) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"cygnetd exited {self.proc.returncode}:\n{self.tail()}")
            if self.socket.exists():
                try:
                    with self.channel() as ch:
                        resp = health_pb2_grpc.HealthStub(ch).Check(
                            health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"cygnetd did not serve within {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.socket}")

    @contextlib.contextmanager
    def stub(self) -> Iterator[pb_grpc.AgentStub]:
        with self.channel() as ch:
            yield pb_grpc.AgentStub(ch)  # type: ignore[no-untyped-call]

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


@contextlib.contextmanager
def private_daemon(prefix: str, port_min: int, pool_size: str = "4G", *,
                   settings: str | None = None, unix_only: bool = False) -> Iterator[Daemon]:
    """A cygnetd of its own on a pool of its own; both are gone afterwards.

    `settings` is TOML for cygnetd's --config (e.g. "min_free_bytes = 1");
    `unix_only` serves the unix socket alone (no TCP listener).
    """
    pool = FilePool.create(pool_size)
    base = WORK / (prefix + secrets.token_hex(3))
    extra: list[str] = ["--listen", ""] if unix_only else []
    if settings is not None:
        base.mkdir(parents=True, exist_ok=True)
        (base / "cygnetd.toml").write_text(settings)
        extra += ["--config", str(base / "cygnetd.toml")]
    daemon = Daemon(pool, base, port_min=port_min, extra_args=extra)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        pool.destroy(daemon.mount_root)


def query(conn: pb.Connection, sql: str, password: str | None = None) -> list[tuple[object, ...]]:
    """Runs SQL over TCP with the connection's own credentials (scram)."""
    import psycopg

    with psycopg.connect(conn.uri if password is None else conn.uri.replace(
            conn.password, password), autocommit=True, connect_timeout=10) as c:
        cur = c.execute(sql)
        return cur.fetchall() if cur.description else []
