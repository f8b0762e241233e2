"""A branch's own Postgres settings and extensions, through the real API."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from cygnet.api.v1 import agent_pb2 as pb
from cygnet.api.v1 import agent_pb2_grpc as pb_grpc
from tests.conftest import unique
from tests.harness import Daemon, query

pytestmark = pytest.mark.integration

Stub = pb_grpc.AgentStub
Made = pb.CreateDatabaseResponse


def field_of(err: grpc.RpcError) -> str:
    field: str = dict(err.trailing_metadata() or ()).get("cygnet-field", "")
    return field


@pytest.fixture(scope="module")
def made(daemon: Daemon) -> Iterator[pb.CreateDatabaseResponse]:
    """One database for the module, created with a setting (`db create --set`)."""
    with daemon.stub() as stub:
        resp = stub.CreateDatabase(pb.CreateDatabaseRequest(
            name=unique("cfg"), size_class="nano", settings={"work_mem": "7MB"}), timeout=120)
        yield resp
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(database=resp.database.id), timeout=120)


def ref(made: pb.CreateDatabaseResponse, name: str = "main") -> pb.BranchRef:
    return pb.BranchRef(database=made.database.name, name=name)


def show(conn: pb.Connection, name: str) -> object:
    return query(conn, f"SHOW {name}")[0][0]


def test_created_with_a_setting_and_set_one_more(stub: Stub, made: Made) -> None:
    assert show(made.connection, "work_mem") == "7MB"
    got = stub.SetBranchConfig(pb.SetBranchConfigRequest(
        branch=ref(made), settings={"statement_timeout": "90s"}), timeout=60)
    assert not got.pending_restart and not got.restarted
    assert {s.name: s.value for s in got.settings} == {"work_mem": "7MB",
                                                      "statement_timeout": "90s"}
    assert show(made.connection, "statement_timeout") == "90s"
    listed = stub.GetBranchConfig(pb.GetBranchConfigRequest(branch=ref(made)))
    assert {s.name: s.current for s in listed.settings}["statement_timeout"] == "90s"


@pytest.mark.parametrize(("key", "value"), [
    ("no_such_setting", "1"),            # unknown key
    ("work_mem", "lots"),                # wrong type
    ("enable_seqscan", "maybe"),         # not a boolean
    ("max_connections", "99999999"),     # out of range
    ("work_mem", "64 parsecs"),          # a unit the setting does not take
    ("wal_level", "verbose"),            # not one of the enum's values
    ("TimeZone", "Mars/Olympus_Mons"),   # Postgres' own check
    ("port", "6001"),                    # owned by Cygnet
    ("ssl", "off"),                      # owned by Cygnet
    ("shared_preload_libraries", "auto_explain"),  # would drop pg_stat_statements
])
def test_bad_settings_are_refused_naming_the_key(stub: Stub, made: Made, key: str,
                                                 value: str) -> None:
    def stored() -> dict[str, str]:
        got = stub.GetBranchConfig(pb.GetBranchConfigRequest(branch=ref(made)))
        return {s.name: s.value for s in got.settings}

    before = stored()
    with pytest.raises(grpc.RpcError) as err:
        stub.SetBranchConfig(pb.SetBranchConfigRequest(
            branch=ref(made), settings={key: value}), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(err.value) == f"settings.{key}", err.value.details()
    assert stored() == before


def test_restart_only_setting_waits_for_restart(stub: Stub, made: Made) -> None:
    before = show(made.connection, "max_connections")
    got = stub.SetBranchConfig(pb.SetBranchConfigRequest(
        branch=ref(made), settings={"max_connections": "33"}), timeout=60)
    assert got.pending_restart and not got.restarted
    assert [s.pending_restart for s in got.settings if s.name == "max_connections"] == [True]
    assert show(made.connection, "max_connections") == before
    got = stub.SetBranchConfig(pb.SetBranchConfigRequest(
        branch=ref(made), settings={"max_connections": "33"}, restart=True), timeout=120)
    assert got.restarted and not got.pending_restart
    assert show(made.connection, "max_connections") == "33"


def test_alter_system_of_an_owned_setting_does_not_win(stub: Stub, made: Made) -> None:
    port = made.main_branch.port
    query(made.connection, f"ALTER SYSTEM SET port = {port + 1}")
    query(made.connection, "ALTER SYSTEM SET shared_preload_libraries = ''")
    stub.StopBranch(pb.StopBranchRequest(branch=ref(made)), timeout=60)
    stub.StartBranch(pb.StartBranchRequest(branch=ref(made)), timeout=120)
    assert show(made.connection, "port") == str(port)
    assert show(made.connection, "shared_preload_libraries") == "pg_stat_statements"


def test_child_inherits_and_pg_stat_statements_works(stub: Stub, made: Made) -> None:
    child = stub.CreateBranch(pb.CreateBranchRequest(database=made.database.id, name="kid"),
                              timeout=120)
    assert show(child.connection, "work_mem") == "7MB"
    stored = stub.GetBranchConfig(pb.GetBranchConfigRequest(branch=ref(made, "kid"))).settings
    assert {s.name: s.value for s in stored}["work_mem"] == "7MB"
    reset = stub.ResetBranchConfig(pb.ResetBranchConfigRequest(
        branch=ref(made, "kid"), names=["work_mem"]), timeout=60)
    assert "work_mem" not in {s.name for s in reset.settings}
    assert show(child.connection, "work_mem") != "7MB"
    assert show(made.connection, "work_mem") == "7MB"  # the parent keeps its own
    query(made.connection, "CREATE EXTENSION pg_stat_statements")
    assert query(made.connection, "SELECT count(*) >= 0 FROM pg_stat_statements") == [(True,)]
    found = stub.ListExtensions(pb.ListExtensionsRequest(database=made.database.name))
    by_name = {e.name: e for e in found.extensions}
    assert by_name["pg_stat_statements"].installed_version
    assert by_name["pg_stat_statements"].default_version
    assert by_name["plpgsql"].comment


def test_connection_carries_sslmode(made: Made) -> None:
    assert made.connection.sslmode in ("verify-full", "require")
    assert made.connection.sslmode in made.connection.uri
    if made.connection.sslmode == "verify-full":
        assert made.connection.sslrootcert


def test_cli_config_and_extensions(daemon: Daemon, made: Made) -> None:
    from tests.integration.test_cli_support import cygnet

    db = made.database.name
    got = cygnet(daemon, "branch", "config", "set", f"{db}/main", "lock_timeout=3s",
                 "--json").json()
    assert {"name": "lock_timeout", "value": "3s", "current": "3s", "pending_restart": False,
            "context": "user"} in got["settings"]
    listed = cygnet(daemon, "branch", "config", "get", f"{db}/main", "lock_timeout").out
    assert "lock_timeout" in listed and "work_mem" not in listed
    bad = cygnet(daemon, "branch", "config", "set", f"{db}/main", "lock_timeout=soon",
                 expect=2)
    assert "settings.lock_timeout" in bad.err
    names = {e["name"] for e in cygnet(daemon, "db", "extensions", db, "--json").json()}
    assert {"plpgsql", "pg_stat_statements"} <= names
    # An owned setting is refused before anything is made.
    refused = cygnet(daemon, "db", "create", unique("cfg"), "--set", "port=6001", expect=2)
    assert "settings.port" in refused.err
    assert cygnet(daemon, "db", "create", "x", "--set", "novalue", expect=2).err
