"""Postgres TLS settings, hostssl rules, connection strings and the listen default."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cygnet import pki
from cygnet.agent import pgtls
from cygnet.agent.clusters import Connection
from cygnet.agent.config import AgentConfig
from cygnet.errors import InternalError, InvalidArgument
from cygnet.postgres.config import ClusterSettings, ServerTls, render_hba, render_settings
from cygnet.postgres.fixup import strip_auto_conf
from cygnet.postgres.layout import postgres_user
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
    # all users (v4, v6), then the replication role (v4, v6)
    assert tcp == ["hostssl"] * 4
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


def test_standalone_postgres_gets_a_key_of_its_own(tmp_path: Path) -> None:
    config = AgentConfig(state_dir=tmp_path / "state", advertise_host="10.9.8.7")
    files = pgtls.ensure_postgres_tls(config)
    api = tmp_path / "state" / "tls"
    assert files.key.read_bytes() != (api / "server.key").read_bytes()
    assert files.ca is not None and files.ca.read_bytes() == (api / "ca.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(files.ca.read_bytes()))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"10.9.8.7", "127.0.0.1"} <= {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    key = files.key.stat()
    assert (key.st_mode & 0o777, key.st_uid) == (0o600, postgres_user().uid)
    # Idempotent; a new advertise host gets a new certificate that names it.
    again = pgtls.ensure_postgres_tls(config)
    assert again.cert.read_bytes() == files.cert.read_bytes()
    moved = pgtls.ensure_postgres_tls(replace(config, advertise_host="10.9.8.6"))
    cert = x509.load_pem_x509_certificate(moved.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.9.8.6" in {str(a) for a in sans.get_values_for_type(x509.IPAddress)}


def test_a_key_that_does_not_match_is_replaced(tmp_path: Path) -> None:
    config = AgentConfig(state_dir=tmp_path / "state")
    files = pgtls.ensure_postgres_tls(config)
    (tmp_path / "state" / "tls" / "server.key").replace(files.key)  # a half-done rotation
    pgtls.ensure_postgres_tls(config)
    key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert key.public_key() == cert.public_key()


def test_fleet_postgres_certificate_and_ca(tmp_path: Path) -> None:
    fleet = tmp_path / "pki"
    pki.init_ca(fleet)
    own = pki.issue(fleet, "client", "h1-postgres", ["10.0.0.5"])
    config = AgentConfig(state_dir=tmp_path / "state", advertise_host="10.0.0.5",
                         coordinator_ca=fleet / "ca.pem", postgres_tls_cert=own.cert,
                         postgres_tls_key=own.key)
    files = pgtls.ensure_postgres_tls(config)
    assert files.cert.read_bytes() == own.cert.read_bytes()
    assert files.ca is not None and files.ca.read_bytes() == (fleet / "ca.pem").read_bytes()
    with pytest.raises(InvalidArgument, match="postgres_tls_key"):
        pgtls.ensure_postgres_tls(replace(config, postgres_tls_key=None))
    with pytest.raises(InvalidArgument, match="postgres_tls_cert"):
        pgtls.ensure_postgres_tls(replace(config, postgres_tls_cert=tmp_path / "missing.pem"))


def test_a_file_that_is_no_certificate_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    config = AgentConfig(state_dir=tmp_path / "state", postgres_tls_cert=junk,
                         postgres_tls_key=junk)
    with pytest.raises(InvalidArgument, match="postgres_tls_cert"):
        pgtls.ensure_postgres_tls(config)
    assert not (tmp_path / "state" / "postgres-tls" / "server.key").exists()
