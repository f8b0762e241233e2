"""The TCP listener: mutual TLS, roles per RPC, the deny list and the audit log.

Every refusal is checked three ways where it applies: the status code the
client gets, the daemon's log line saying why, and the audit line of the call.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cygnet import pki
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import VENV_BIN, Daemon, fleet_pki
from tests.integration.test_cli_support import DENIED, assert_one_error_line, cygnet

pytestmark = pytest.mark.integration


class Log:
    """What a file gained since this object was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size if path.exists() else 0

    def new(self) -> str:
        with self.path.open("rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")

    def wait_for(self, fragment: str) -> str:
        """gRPC core writes its handshake lines from its own threads: wait until seen."""
        deadline = time.monotonic() + 10
        while fragment not in (text := self.new()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return text


def audit_lines(log: Log, count: int = 1) -> list[dict[str, Any]]:
    """The audit lines written since `log` was made, once there are `count` of them:
    the daemon may write a line just after the client got its answer."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(x) for x in log.new().splitlines() if x.strip()]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines


def call(channel: grpc.Channel, method: str, request: Any) -> Any:
    return getattr(pb_grpc.AgentStub(channel), method)(  # type: ignore[no-untyped-call]
        request, timeout=30)


def raw_channel(daemon: Daemon, key: bytes | None, chain: bytes | None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(daemon.server_ca.read_bytes(), key, chain)
    return grpc.secure_channel(f"127.0.0.1:{daemon.listen_port}", creds)


def expired_pair(directory: Path) -> tuple[bytes, bytes]:
    """A client/admin certificate signed by the fleet CA that expired yesterday."""
    ca_dir = fleet_pki().dir
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client/admin")]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (directory / "expired.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "expired.key").write_bytes(key_pem)
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def db(daemon: Daemon) -> Iterator[str]:
    name = unique("auth")
    with daemon.tls_channel("admin") as ch:
        call(ch, "CreateDatabase", pb.CreateDatabaseRequest(name=name, size_class="nano"))
    yield name
    with daemon.stub() as stub:
        try:
            stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=name), timeout=120)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("case", ["none", "foreign", "expired"])
def test_handshake_refusals(daemon: Daemon, tmp_path: Path, case: str) -> None:
    if case == "none":
        key, chain, why = None, None, "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    elif case == "foreign":
        pki.init_ca(tmp_path / "other")
        issued = pki.issue(tmp_path / "other", "client", "admin", [])
        key, chain = issued.key.read_bytes(), issued.cert.read_bytes()
        why = "unable to get local issuer certificate"
    else:
        key, chain = expired_pair(tmp_path)
        why = "expired"
    server_log = Log(daemon.log_path)
    with raw_channel(daemon, key, chain) as ch, pytest.raises(grpc.RpcError) as refused:
        call(ch, "ListDatabases", pb.ListDatabasesRequest())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    line = next((x for x in server_log.wait_for(why).splitlines() if "Handshake failed" in x), "")
    assert why in line, server_log.new()[-2000:]


def test_cli_says_the_certificate_was_refused(daemon: Daemon, tmp_path: Path) -> None:
    host = ["--host", f"127.0.0.1:{daemon.listen_port}", "--ca", str(daemon.server_ca)]
    server_log = Log(daemon.log_path)
    result = cygnet(None, *host, "db", "list", expect=DENIED)
    assert_one_error_line(result, "the daemon refused this client's certificate",
                          "no client certificate")
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in server_log.wait_for("PEER_DID_NOT")
    # Not retried for 10 s as a transport failure: gRPC's handshake and the CLI's
    # diagnosis, not eight of them.
    assert server_log.new().count("Handshake failed") <= 2
    expired_pair(tmp_path)
    result = cygnet(None, *host, "--cert", str(tmp_path / "expired.pem"),
                    "--key", str(tmp_path / "expired.key"), "db", "list", expect=DENIED)
    assert_one_error_line(result, "the daemon refused this client's certificate", "expired")
    # The Backups service's commands say the same.
    result = cygnet(None, *host, "backup", "list", expect=DENIED)
    assert_one_error_line(result, "the daemon refused this client's certificate")


def test_revoked_certificate_and_deny_list_reload(daemon: Daemon) -> None:
    cert, _ = fleet_pki().pair("revokee")
    serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    audit, server_log = Log(daemon.audit_path), Log(daemon.log_path)
    with daemon.tls_channel("revokee") as ch:
        call(ch, "ListDatabases", pb.ListDatabasesRequest())
        daemon.revoked_path.write_text(f"# revoked for the test\n{serial:X}\n")
        try:
            with pytest.raises(grpc.RpcError) as refused:
                call(ch, "DeleteDatabase", pb.DeleteDatabaseRequest(database="nope"))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "revoked" in (refused.value.details() or "")
        finally:
            daemon.revoked_path.write_text("")
        # The emptied list is re-read too: the same certificate is served again.
        call(ch, "ListDatabases", pb.ListDatabasesRequest())
    assert "client/revokee is revoked" in server_log.new()
    (line,) = [x for x in audit_lines(audit) if x["outcome"] == "UNAUTHENTICATED"]
    assert line["identity"] == "client/revokee" and line["role"] == ""
    assert line["method"].endswith("/DeleteDatabase")
    assert line["target"] == {"database": "nope"} and "revoked" in line["reason"]


@pytest.mark.parametrize(("client", "method", "request_"), [
    ("reader", "DeleteDatabase", pb.DeleteDatabaseRequest(database="DB", request_id="r-1")),
    ("reader", "GetConnection", pb.GetConnectionRequest(branch=pb.BranchRef(database="DB"))),
    ("reader", "CreateBranch", pb.CreateBranchRequest(database="DB", name="x")),
    ("operator", "DeleteDatabase", pb.DeleteDatabaseRequest(database="DB")),
    ("nobody", "ListDatabases", pb.ListDatabasesRequest()),
])
def test_roles_refuse(daemon: Daemon, db: str, client: str, method: str,
                      request_: Any) -> None:
    request = type(request_)()
    request.CopyFrom(request_)
    for field in ("database",):
        if getattr(request, field, None) == "DB":
            setattr(request, field, db)
    if request.HasField("branch") if "branch" in request.DESCRIPTOR.fields_by_name else False:
        request.branch.database = db
    audit = Log(daemon.audit_path)
    with daemon.tls_channel(client) as ch, pytest.raises(grpc.RpcError) as refused:
        call(ch, method, request)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = refused.value.details() or ""
    assert f"client/{client}" in details and method in details
    assert (CLIENT_ROLE[client] or "no role") in details
    (line,) = audit_lines(audit)
    assert line["identity"] == f"client/{client}" and line["method"].endswith("/" + method)
    assert line["outcome"] == "PERMISSION_DENIED"
    if method != "ListDatabases":
        assert db in json.dumps(line["target"])


CLIENT_ROLE = {"reader": "reader", "operator": "operator", "nobody": ""}


def test_reader_reads_and_admin_acts(daemon: Daemon, db: str) -> None:
    audit = Log(daemon.audit_path)
    with daemon.tls_channel("reader") as ch:
        names = [d.name for d in call(ch, "ListDatabases", pb.ListDatabasesRequest()).databases]
        assert db in names
        call(ch, "GetHostStatus", pb.GetHostStatusRequest())
    assert audit_lines(audit, 0) == []  # reads are not audited
    ref = pb.BranchRef(database=db, name="main")
    with daemon.tls_channel("operator") as ch:
        conn = call(ch, "GetConnection", pb.GetConnectionRequest(branch=ref))
        call(ch, "CreateSnapshot", pb.CreateSnapshotRequest(branch=ref, name="s1",
                                                            request_id="snap-req-1"))
    with daemon.tls_channel("admin") as ch:
        call(ch, "DeleteDatabase", pb.DeleteDatabaseRequest(database=db, request_id="del-1"))
    lines = audit_lines(audit, 3)
    assert [(x["identity"], x["method"].rsplit("/", 1)[1], x["outcome"]) for x in lines] == [
        ("client/operator", "GetConnection", "OK"), ("client/operator", "CreateSnapshot", "OK"),
        ("client/admin", "DeleteDatabase", "OK")]
    assert lines[1]["target"] == {"branch": f"{db}/main", "name": "s1"}
    assert lines[1]["request_id"] == "snap-req-1" and lines[2]["request_id"] == "del-1"
    assert conn.password and conn.password not in daemon.audit_path.read_text()


def test_local_socket_is_admin_and_audited(daemon: Daemon) -> None:
    audit = Log(daemon.audit_path)
    with daemon.stub() as stub, pytest.raises(grpc.RpcError):
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=unique("gone")), timeout=30)
    (line,) = audit_lines(audit)
    assert line["identity"] == "local/root" and line["outcome"] == "NOT_FOUND"


def test_tcp_without_client_ca_refuses_to_start(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "cygnetd"), "--pool", "nonexistent", "--listen", "127.0.0.1:1",
         "--state-dir", str(tmp_path), "--run-dir", str(tmp_path / "run"),
         "--socket", str(tmp_path / "s.sock")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "tls_client_ca" in proc.stderr and "listen = 127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_only_a_coordinator_may_name_another_caller(daemon: Daemon, tmp_path: Path) -> None:
    forwarded = (("cygnet-caller", "client/alice"), ("cygnet-caller-role", "admin"))
    gone = pb.DeleteDatabaseRequest(database=unique("gone"))
    audit = Log(daemon.audit_path)
    with daemon.tls_channel("reader") as ch, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.AgentStub(ch).DeleteDatabase(  # type: ignore[no-untyped-call]
            gone, metadata=forwarded, timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED  # still the reader
    issued = pki.issue(fleet_pki().dir, "coordinator", f"c{tmp_path.name[-6:]}", [], tmp_path)
    with raw_channel(daemon, issued.key.read_bytes(), issued.cert.read_bytes()) as ch, \
            pytest.raises(grpc.RpcError) as missing:
        pb_grpc.AgentStub(ch).DeleteDatabase(  # type: ignore[no-untyped-call]
            gone, metadata=forwarded, timeout=30)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # admitted as client/alice
    first, second = audit_lines(audit, 2)
    assert (first["identity"], first["outcome"]) == ("client/reader", "PERMISSION_DENIED")
    assert "via" not in first
    assert (second["identity"], second["role"], second["outcome"]) == (
        "client/alice", "admin", "NOT_FOUND")
    assert second["via"].startswith("coordinator/c")


def test_a_new_client_ca_takes_effect_without_restart(daemon: Daemon, tmp_path: Path) -> None:
    pki.init_ca(tmp_path / "next")
    issued = pki.issue(tmp_path / "next", "client", "admin", [])
    pair = issued.key.read_bytes(), issued.cert.read_bytes()
    with raw_channel(daemon, *pair) as ch, pytest.raises(grpc.RpcError) as refused:
        call(ch, "ListDatabases", pb.ListDatabasesRequest())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    original = daemon.client_ca.read_bytes()
    server_log = Log(daemon.log_path)
    try:
        # CA rollover: both CAs are trusted for a while.
        daemon.client_ca.write_bytes(original + issued.ca.read_bytes())
        with raw_channel(daemon, *pair) as ch:
            call(ch, "ListDatabases", pb.ListDatabasesRequest())
        assert "TLS certificate files changed" in server_log.new()
    finally:
        daemon.client_ca.write_bytes(original)
    with raw_channel(daemon, *pair) as ch, pytest.raises(grpc.RpcError) as again:
        call(ch, "ListDatabases", pb.ListDatabasesRequest())
    assert again.value.code() == grpc.StatusCode.UNAVAILABLE
