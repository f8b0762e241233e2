"""The authorization table, role resolution, the deny list and audit targets: no daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from cygnet.agent.config import AgentConfig
from cygnet.agent.server import check_listener
from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import backup_pb2 as bpb
from cygnet.coordinator.auth import load_tokens
from cygnet.errors import InvalidArgument
from cygnet.rpc.audit import request_id_of, target_of
from cygnet.rpc.descriptors import methods, request_class, services
from cygnet.rpc.revocation import DenyList, parse
from cygnet.rpc.roles import PERMISSIONS, Kind, Role, RoleMap, allowed, audited


def test_every_rpc_in_the_descriptors_has_an_entry() -> None:
    names = {s.name for s in services()}
    assert {"Agent", "Backups", "Coordinator"} <= names
    missing = [m for m in methods() if m not in PERMISSIONS]
    assert missing == [], f"add these methods to rpc/roles.py: {missing}"
    stale = sorted(set(PERMISSIONS) - set(methods()))
    assert stale == [], f"no such methods in the protos: {stale}"


def test_unknown_methods_are_denied_to_everyone() -> None:
    for role in Role:
        assert not allowed(role, "/cygnet.v1.Agent/DropEverything")
    assert not allowed("", "/cygnet.v1.Agent/ListDatabases")


@pytest.mark.parametrize("method", ["/cygnet.v1.Agent/DeleteDatabase",
                                    "/cygnet.v1.Backups/PruneBackups",
                                    "/cygnet.v1.Coordinator/DeleteDatabase"])
def test_only_admin_deletes_databases_and_backups(method: str) -> None:
    assert allowed(Role.ADMIN, method)
    assert not allowed(Role.OPERATOR, method)
    assert not allowed(Role.READER, method)


def test_readers_read_but_never_secrets_or_changes() -> None:
    for method, kind in PERMISSIONS.items():
        assert allowed(Role.READER, method) == (kind == Kind.READ), method
    assert not allowed(Role.READER, "/cygnet.v1.Agent/GetConnection")
    assert not allowed(Role.READER, "/cygnet.v1.Coordinator/GetConnection")


def test_operators_do_everything_but_deletes_of_databases_and_backups() -> None:
    for method, kind in PERMISSIONS.items():
        if kind in (Kind.READ, Kind.CHANGE, Kind.SECRET):
            assert allowed(Role.OPERATOR, method), method


def test_only_hosts_register_and_beat() -> None:
    for method in ("/cygnet.v1.Coordinator/RegisterHost", "/cygnet.v1.Coordinator/Heartbeat"):
        assert [r for r in Role if allowed(r, method)] == [Role.HOST]


def test_mutations_and_secret_reads_are_audited_reads_are_not() -> None:
    assert audited("/cygnet.v1.Agent/CreateBranch")
    assert audited("/cygnet.v1.Agent/GetConnection")
    assert not audited("/cygnet.v1.Agent/ListBranches")
    assert not audited("/cygnet.v1.Coordinator/Heartbeat")


def test_role_map() -> None:
    roles = RoleMap.from_setting({"client/alice": "operator", "client/*": "reader"})
    assert roles.role_of("client/alice") == "operator"
    assert roles.role_of("client/bob") == "reader"
    assert roles.role_of("host/h1") == "host"
    assert roles.role_of("coordinator/c") == "coordinator"
    assert RoleMap.from_setting({}).role_of("client/bob") is None
    with pytest.raises(InvalidArgument, match="superuser") as err:
        RoleMap.from_setting({"client/alice": "superuser"})
    assert err.value.field == "roles"
    with pytest.raises(InvalidArgument, match="KIND/NAME"):
        RoleMap.from_setting({"alice": "admin"})


def test_deny_list(tmp_path: Path) -> None:
    entries = parse("# comment\n0A:1b\nserial=FF\nclient/eve  # gone\n", "x")
    assert entries.serials == {0x0A1B, 0xFF} and entries.identities == {"client/eve"}
    with pytest.raises(InvalidArgument, match="line 1"):
        parse("not-hex\n", "x")
    path = tmp_path / "revoked"
    path.write_text("client/eve\n")
    deny = DenyList(path)
    assert deny.refusal("client/eve", None) and deny.refusal("client/bob", None) is None
    path.write_text("garbage!\n")  # a broken edit keeps the last good list
    assert deny.refusal("client/eve", None)
    with pytest.raises(InvalidArgument, match="revoked"):
        DenyList(tmp_path / "missing")


def test_tokens_carry_roles(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("ci 0123456789abcdef0123 reader\nops fedcba9876543210fedc\n")
    assert load_tokens(path) == {"0123456789abcdef0123": ("ci", "reader"),
                                 "fedcba9876543210fedc": ("ops", "")}
    path.write_text("ci 0123456789abcdef0123 root\n")
    with pytest.raises(InvalidArgument, match="root"):
        load_tokens(path)


def test_audit_targets_never_carry_secrets() -> None:
    ref = pb.BranchRef(database="shop", name="feature")
    assert target_of(pb.ResetBranchRequest(branch=ref, snapshot="s1", request_id="r")) == {
        "branch": "shop/feature", "snapshot": "s1"}
    assert request_id_of(pb.ResetBranchRequest(request_id="r")) == "r"
    assert target_of(bpb.PruneBackupsRequest(database="shop", backup_ids=["b1", "b2"])) == {
        "database": "shop", "backup_ids": "b1,b2"}
    long = target_of(pb.GetDatabaseRequest(database="x" * 20000))["database"]
    assert len(long) < 300
    connection_fields = set(pb.Connection.DESCRIPTOR.fields_by_name)
    for method in methods():
        cls = request_class(method)
        assert cls is not None
        assert not {"password", "uri"} & set(cls.DESCRIPTOR.fields_by_name), method
    assert "password" in connection_fields


def test_a_tcp_listener_needs_a_client_ca(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(InvalidArgument, match="needs tls_client_ca") as err:
        check_listener(AgentConfig(pools=("tank",), listen="0.0.0.0:7433"))
    assert err.value.field == "tls_client_ca"
    check_listener(AgentConfig(pools=("tank",)))  # the default: unix socket only
    check_listener(AgentConfig(pools=("tank",), listen="0.0.0.0:7433",
                               tls_client_ca=Path("/etc/cygnet/pki/ca.pem")))
    assert not caplog.records
    check_listener(AgentConfig(pools=("tank",), listen="0.0.0.0:7433",
                               allow_tcp_without_client_certs=True))
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "WITHOUT certificates" in record.message
