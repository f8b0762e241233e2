"""Three hosts, a coordinator and a client, each in its own network namespace.

Every host runs its own cygnetd on its own file-backed pool and address; the
coordinator places, routes and watches them over mutual TLS. The test talks
to the coordinator through its unix socket (also mutual TLS) and, from the
client namespace, through the token listener.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import psycopg
import pytest

from cygnet.api.v1 import agent_pb2 as apb
from cygnet.api.v1 import coordinator_pb2 as cpb
from tests.e2e.fleet import Coordinator, Lan, Pki, wait_for
from tests.harness import VENV_BIN, WORK, Daemon, FilePool

pytestmark = pytest.mark.integration

GB = 1024**3
# h1 offers twice the memory of h2 and h3, so it should take twice the databases.
HOSTS = {"h1": ("z1", 4 * GB, {"disk": "nvme"}), "h2": ("z1", 2 * GB, {}),
         "h3": ("z2", 2 * GB, {})}
TOKEN = secrets.token_hex(16)


@dataclass
class Fleet:
    lan: Lan
    pki: Pki
    coordinator: Coordinator
    daemons: dict[str, Daemon]

    def hosts(self) -> dict[str, cpb.FleetHost]:
        with self.coordinator.stub() as c:
            return {h.id: h for h in c.ListHosts(cpb.ListHostsRequest(), timeout=10).hosts}

    def state(self, host: str) -> int:
        return self.hosts()[host].state


def _daemon(lan: Lan, pki: Pki, name: str, index: int, coordinator: str) -> Daemon:
    zone, memory, labels = HOSTS[name]
    address = lan.add(name)
    cert, key = pki.issue("host", name, address)
    # 12G (a sparse file): a nano database's 256 MB of pool budget, counted until the
    # next heartbeat, stays small beside its memory budget, so memory decides the spread
    # whatever the heartbeats' timing (with 3G pools it once came out 13/9/8).
    d = Daemon(FilePool.create("12G"), WORK / f"e2e-{lan.tag}-{name}", port_min=58000 + 200 * index,
               netns=lan.ns(name))
    d.extra_args = [
        "--listen", f"{address}:7433", "--advertise-host", address, "--postgres-listen", address,
        "--host-id", name, "--coordinator", coordinator, "--coordinator-ca", str(pki.ca),
        "--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(pki.ca),
        "--zone", zone, "--memory-bytes", str(memory),
        *[f"--label={k}={v}" for k, v in labels.items()]]
    return d


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    lan = Lan().open()
    base = WORK / f"e2e-{lan.tag}"
    daemons: dict[str, Daemon] = {}
    coordinator: Coordinator | None = None
    try:
        pki = Pki.create(base / "pki")
        addr = lan.add("coord")
        lan.add("client")
        (base / "tokens").write_text(f"ci {TOKEN} operator\n")
        coordinator = Coordinator(
            base / "coord", pki, f"sqlite:///{base}/coord/state.db", listen=[f"{addr}:7434"],
            extra_args=["--listen-token", f"{addr}:7435", "--tokens-file", str(base / "tokens"),
                        "--heartbeat-interval", "1", "--missed-heartbeats", "3"],
            netns=lan.ns("coord"))
        coordinator.start()
        for i, name in enumerate(HOSTS):
            daemons[name] = _daemon(lan, pki, name, i, f"{addr}:7434")
        # One at a time, as fleet.host_fleet() does: three cygnetds making their
        # first datasets at once have left zfs-fuse hung (a `zfs create` that never
        # returns), and every later test with it.
        for d in daemons.values():
            d.start()
        f = Fleet(lan, pki, coordinator, daemons)
        wait_for(lambda: len(f.hosts()) == 3, 30, "three registered hosts")
        yield f
    finally:
        if coordinator is not None:
            coordinator.stop()
        for d in daemons.values():
            d.stop()
        for d in daemons.values():
            d.pool.destroy(d.mount_root)
        lan.close()


def create(f: Fleet, name: str, **constraints: object) -> cpb.FleetCreateDatabaseResponse:
    req = cpb.FleetCreateDatabaseRequest(
        database=apb.CreateDatabaseRequest(name=name, size_class="nano"),
        constraints=cpb.PlacementConstraints(**constraints))  # type: ignore[arg-type]
    with f.coordinator.stub() as c:
        made: cpb.FleetCreateDatabaseResponse = c.CreateDatabase(req, timeout=300)
        return made


def dry_place(f: Fleet, n: int = 6) -> set[str]:
    with f.coordinator.stub() as c:
        return {c.PlaceDatabase(cpb.PlaceDatabaseRequest(size_class="nano", dry_run=True),
                                timeout=10).host_id for _ in range(n)}


def eligible_hosts(f: Fleet) -> int:
    with f.coordinator.stub() as c:
        placed: cpb.Placement = c.PlaceDatabase(
            cpb.PlaceDatabaseRequest(size_class="nano", dry_run=True), timeout=10)
        return placed.eligible


def test_fleet(fleet: Fleet) -> None:
    t0 = time.monotonic()
    # 1. Thirty databases, three at a time: spread in proportion to memory.
    with ThreadPoolExecutor(3) as ex:
        made = list(ex.map(lambda i: create(fleet, f"db{i:02d}"), range(30)))
    counts = Counter(r.placement.host_id for r in made)
    assert sum(counts.values()) == 30
    _audited_with_the_real_caller(fleet)
    assert 14 <= counts["h1"] <= 16 and 7 <= counts["h2"] <= 8 and 7 <= counts["h3"] <= 8, counts
    assert all("utilisation after placement" in r.placement.reason for r in made)
    with fleet.coordinator.stub() as c:
        listed = c.ListDatabases(apb.ListDatabasesRequest(), timeout=10).databases
        assert len(listed) == 30 and all(d.host_available for d in listed)
        # Constraints: zone z2 is h3 alone; label disk=nvme is h1.
        z2 = c.PlaceDatabase(cpb.PlaceDatabaseRequest(
            size_class="nano", dry_run=True, constraints=cpb.PlacementConstraints(zone="z2")))
        assert z2.host_id == "h3"
    print(f"placed 30 in {time.monotonic() - t0:.1f}s: {dict(counts)}")
    _branches(fleet, made)
    _drain(fleet)
    _cli_hosts(fleet)
    _host_down_and_back(fleet, made)
    _security(fleet)
    _catalog_rebuild(fleet)


def _branches(f: Fleet, made: list[cpb.FleetCreateDatabaseResponse]) -> None:
    by_host = {r.placement.host_id: r for r in made}
    with f.coordinator.stub() as c:
        for host, r in sorted(by_host.items()):
            name = r.result.database.name
            b = c.CreateBranch(apb.CreateBranchRequest(database=name, name="feature"),
                               timeout=300)
            assert b.branch.database_id == r.result.database.id
            assert b.connection.host == f.lan.nodes[host]
            got = c.GetBranch(apb.GetBranchRequest(branch=apb.BranchRef(
                branch_id=b.branch.id)), timeout=30)
            assert got.name == "feature"
            conn = c.GetConnection(apb.GetConnectionRequest(branch=apb.BranchRef(
                database=name, name="feature")), timeout=30)
            with psycopg.connect(host=conn.socket_dir, port=conn.port, user=conn.user,
                                 password=conn.password, dbname=conn.dbname,
                                 connect_timeout=10) as pg:
                assert pg.execute("SELECT 1").fetchone() == (1,)
            reset = c.ResetBranch(apb.ResetBranchRequest(branch=apb.BranchRef(
                branch_id=b.branch.id)), timeout=300)
            assert reset.id == b.branch.id
            listed = c.ListBranches(apb.ListBranchesRequest(database=name), timeout=30)
            assert {x.name for x in listed.branches} == {"main", "feature"}
            c.DeleteBranch(apb.DeleteBranchRequest(branch=apb.BranchRef(
                branch_id=b.branch.id)), timeout=300)
        victim = made[-1].result.database.name
        c.DeleteDatabase(apb.DeleteDatabaseRequest(database=victim), timeout=300)
        with pytest.raises(grpc.RpcError) as err:
            c.GetDatabase(apb.GetDatabaseRequest(database=victim), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _drain(f: Fleet) -> None:
    nvme = cpb.PlaceDatabaseRequest(size_class="nano", dry_run=True,
                                    constraints=cpb.PlacementConstraints(labels={"disk": "nvme"}))
    with f.coordinator.stub() as c:
        assert c.PlaceDatabase(nvme, timeout=10).host_id == "h1"
        assert c.DrainHost(cpb.DrainHostRequest(host_id="h1"), timeout=10).drained
        assert "h1" not in dry_place(f)
        with pytest.raises(grpc.RpcError) as err:
            c.PlaceDatabase(nvme, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not c.UndrainHost(cpb.DrainHostRequest(host_id="h1"), timeout=10).drained
        assert c.PlaceDatabase(nvme, timeout=10).host_id == "h1"


def _audited_with_the_real_caller(f: Fleet) -> None:
    """The agents' audit logs name the client the coordinator acted for, not the coordinator."""
    def creates() -> list[dict[str, str]]:
        lines = [json.loads(x) for d in f.daemons.values() if d.audit_path.exists()
                 for x in d.audit_path.read_text().splitlines()]
        return [x for x in lines if x["method"] == "/cygnet.v1.Agent/CreateDatabase"]

    wait_for(lambda: len(creates()) >= 30, 10, "30 audited creates")
    assert {(x["identity"], x.get("via"), x["role"], x["outcome"]) for x in creates()} == {
        ("client/tester", "coordinator/coordinator", "admin", "OK")}
    coordinator_lines = [json.loads(x) for x in
                         f.coordinator.audit_path.read_text().splitlines()]
    assert sum(x["method"].endswith("/CreateDatabase") and x["identity"] == "client/tester"
               for x in coordinator_lines) == 30


def _cli_hosts(f: Fleet) -> None:
    """The operator's view: `cygnet --coordinator ... hosts`, from the client's namespace."""
    coordinator = f"{f.lan.nodes['coord']}:7435"

    def cygnet(*args: str) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--net=/var/run/netns/{f.lan.ns('client')}",
                str(VENV_BIN / "cygnet"), "--coordinator", coordinator, "--ca", str(f.pki.ca),
                *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              env={"CYGNET_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"})

    listed = cygnet("--json", "hosts", "list")
    assert listed.returncode == 0, listed.stderr
    hosts = {h["id"]: h for h in json.loads(listed.stdout)}
    assert set(hosts) == set(HOSTS)
    assert cygnet("hosts", "drain", "h2").returncode == 0
    assert "h2" not in dry_place(f)
    assert eligible_hosts(f) == 2
    assert cygnet("hosts", "undrain", "h2").returncode == 0
    assert cygnet("hosts", "drain", "nosuchhost").returncode == 3
    # Which host ranks first depends on where the deleted database was placed;
    # what undrain must do is make h2 eligible again.
    assert eligible_hosts(f) == 3


def _host_down_and_back(f: Fleet, made: list[cpb.FleetCreateDatabaseResponse]) -> None:
    on_h2 = next(r.result.database for r in made if r.placement.host_id == "h2")
    f.daemons["h2"].kill9()
    t0 = time.monotonic()
    wait_for(lambda: f.state("h2") == cpb.HOST_STATE_UNAVAILABLE, 15, "h2 unavailable")
    print(f"h2 unavailable after {time.monotonic() - t0:.1f}s")
    assert "h2" not in dry_place(f)
    with f.coordinator.stub() as c:
        got = c.GetDatabase(apb.GetDatabaseRequest(database=on_h2.name), timeout=10)
        assert not got.host_available and got.host_id == "h2"
        assert got.database.id == on_h2.id
        with pytest.raises(grpc.RpcError) as err:
            c.CreateBranch(apb.CreateBranchRequest(database=on_h2.name, name="x"), timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not lost" in (err.value.details() or "")
    f.daemons["h2"].start()
    wait_for(lambda: f.state("h2") == cpb.HOST_STATE_AVAILABLE, 30, "h2 available again")
    with f.coordinator.stub() as c:
        got = c.GetDatabase(apb.GetDatabaseRequest(database=on_h2.name), timeout=30)
        assert got.host_available and got.database.main_branch_id == on_h2.main_branch_id


def _security(f: Fleet) -> None:
    coord = f.lan.nodes["coord"]
    out = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{f.lan.ns('client')}", str(VENV_BIN / "python"), "-m",
         "tests.e2e.client_probe", f"{coord}:7435", str(f.pki.ca), TOKEN],
        capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(out.stdout)
    assert got["none"] == "UNAUTHENTICATED" and got["wrong"] == "UNAUTHENTICATED"
    assert got["right"] == "OK" and got["hosts"] == ["h1", "h2", "h3"]
    # Roles hold at the coordinator too: a reader lists but gets no secret.
    with f.coordinator.stub("client", "viewer") as c:
        assert len(c.ListHosts(cpb.ListHostsRequest(), timeout=10).hosts) == 3
        with pytest.raises(grpc.RpcError) as err:
            c.GetConnection(apb.GetConnectionRequest(branch=apb.BranchRef(database="db00")),
                            timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "client/viewer (reader) may not call GetConnection" in (err.value.details() or "")
    with f.coordinator.stub("client", "stranger") as c, pytest.raises(grpc.RpcError) as err:
        c.ListHosts(cpb.ListHostsRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no role" in (err.value.details() or "")
    # A host certificate cannot speak for another host.
    with f.coordinator.stub("host", "h1") as c, pytest.raises(grpc.RpcError) as err:
        c.Heartbeat(cpb.HeartbeatRequest(host_id="h2"), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A certificate from another CA does not even get a handshake.
    rogue = Pki.create(f.pki.dir.parent / "rogue")
    creds = rogue.channel_credentials("client", "mallory")
    with grpc.secure_channel(f"unix:{f.coordinator.socket}", creds, options=[
            ("grpc.ssl_target_name_override", "localhost")]) as ch:
        with pytest.raises(grpc.RpcError) as err:
            from cygnet.api.v1 import coordinator_pb2_grpc as cpb_grpc

            cpb_grpc.CoordinatorStub(ch).ListHosts(  # type: ignore[no-untyped-call]
                cpb.ListHostsRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def _catalog_rebuild(f: Fleet) -> None:
    """The store is lost: hosts register again and the catalog comes back from them."""
    f.coordinator.stop()
    for suffix in ("", "-wal", "-shm"):
        (f.coordinator.base / f"state.db{suffix}").unlink(missing_ok=True)
    f.coordinator.start()
    wait_for(lambda: len(f.hosts()) == 3, 30, "hosts registered again")

    def catalog_size() -> int:
        with f.coordinator.stub() as c:
            return len(c.ListDatabases(apb.ListDatabasesRequest(), timeout=10).databases)

    wait_for(lambda: catalog_size() == 29, 30, "catalog rebuilt with 29 databases")
