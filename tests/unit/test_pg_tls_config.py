"""Postgres TLS settings, hostssl rules, connection strings and the listen default."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from cygnet.agent import pgtls
from cygnet.agent.clusters import Connection
from cygnet.agent.config import AgentConfig
from cygnet.errors import InternalError, InvalidArgument
from cygnet.postgres.config import ClusterSettings, ServerTls, render_hba, render_settings
from cygnet.postgres.fixup import strip_auto_conf
from cygnet.postgres.sizes import size_class

TLS = ServerTls(Path("/var/lib/cygnet/postgres-tls/server.crt"),
                Path("/var/lib/cygnet/postgres-tls/server.key"),
                Path("/var/lib/cygnet/postgres-tls/ca.pem"))
BASE = ClusterSettings(port=56001, listen_addresses="127.0.0.1",
                       socket_dir=Path("/run/cygnet/s/abc"), size=size_class("nano"), tls=TLS)


def conf(settings: ClusterSettings) -> dict[str, str]:
    lines = render_settings(settings).splitlines()
    return dict(line.split(" = ", 1) for line in lines if not line.startswith("#"))


def test_tls_settings_name_absolute_files() -> None:
    got = conf(BASE)
    assert got["ssl"] == "on"
    assert got["ssl_cert_file"] == f"'{TLS.cert}'"
    assert got["ssl_key_file"] == f"'{TLS.key}'"
    assert got["ssl_ca_file"] == f"'{TLS.ca}'"


def test_without_tls_ssl_is_off() -> None:
    assert conf(replace(BASE, tls=None))["ssl"] == "off"


@pytest.mark.parametrize("key", [Path("server.key"), Path("/etc/x'; evil")])
def test_tls_files_must_be_plain_absolute_paths(key: Path) -> None:
    with pytest.raises(InternalError):
        render_settings(replace(BASE, tls=ServerTls(TLS.cert, key)))


def test_tcp_rules_are_hostssl_only() -> None:
    tcp = [line.split()[0] for line in render_hba().splitlines()
           if line and not line.startswith(("#", "local"))]
    assert tcp == ["hostssl", "hostssl"]
    assert all(line.startswith(("#", "local", "host ")) or not line
               for line in render_hba(ssl=False).splitlines())


def test_clones_drop_inherited_tls_and_listen_settings() -> None:
    auto = "ssl = 'off'\nssl_key_file = 'server.key'\nlisten_addresses = '*'\nwork_mem = '8MB'\n"
    assert strip_auto_conf(auto) == "work_mem = '8MB'\n"


def test_connection_uri_carries_sslmode() -> None:
    conn = Connection("db1.example", 54001, "postgres", "p@ss", "postgres", Path("/run/s"),
                      sslmode="verify-full", sslrootcert=Path("/var/lib/cygnet/ca.pem"))
    params = parse_qs(urlsplit(conn.uri).query)
    assert params == {"sslmode": ["verify-full"], "sslrootcert": ["/var/lib/cygnet/ca.pem"]}
    plain = Connection("127.0.0.1", 54001, "postgres", "x", "postgres", Path("/run/s"))
    assert plain.uri.endswith("/postgres?sslmode=require")


def test_listen_defaults_to_the_advertise_host() -> None:
    assert pgtls.listen_addresses(AgentConfig(advertise_host="10.1.2.3")) == "10.1.2.3"
    assert pgtls.listen_addresses(AgentConfig(advertise_host="localhost")) == "localhost"
    given = AgentConfig(advertise_host="10.1.2.3", postgres_listen="10.1.2.3,127.0.0.1")
    assert pgtls.listen_addresses(given) == "10.1.2.3,127.0.0.1"
    with pytest.raises(InvalidArgument, match="postgres_listen"):
        pgtls.listen_addresses(AgentConfig(advertise_host="no-such-host.invalid"))


def test_certificate_names_cover_connection_strings() -> None:
    names = pgtls.server_names(AgentConfig(advertise_host="db1.example",
                                           postgres_listen="10.0.0.5,*"))
    assert names == ["db1.example", "127.0.0.1", "localhost", "10.0.0.5"]
