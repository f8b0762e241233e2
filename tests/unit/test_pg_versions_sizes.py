"""Version discovery and size classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cygnet.errors import InvalidArgument
from cygnet.postgres.sizes import SIZE_CLASSES, size_class
from cygnet.postgres.sql import connection_uri
from cygnet.postgres.versions import installed_versions, resolve_version

BINARIES = ("postgres", "initdb", "pg_ctl")


def fake_install(root: Path, version: str, binaries: tuple[str, ...] = BINARIES) -> None:
    bindir = root / version / "bin"
    bindir.mkdir(parents=True)
    for name in binaries:
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)


def test_installed_versions_sorted_numerically(tmp_path: Path) -> None:
    for v in ("9.6", "15", "16", "13"):
        fake_install(tmp_path, v)
    fake_install(tmp_path, "17", ("postgres",))  # incomplete: no initdb
    (tmp_path / "lib").mkdir()
    versions = installed_versions(tmp_path)
    assert list(versions) == ["9.6", "13", "15", "16"]
    assert versions["15"] == tmp_path / "15" / "bin"


def test_resolve_version(tmp_path: Path) -> None:
    fake_install(tmp_path, "15")
    fake_install(tmp_path, "16")
    # Pinned: installing a newer major does not change what "" means.
    assert resolve_version("", tmp_path) == ("15", tmp_path / "15" / "bin")
    assert resolve_version("", tmp_path, default="16") == ("16", tmp_path / "16" / "bin")
    with pytest.raises(InvalidArgument, match=r"default PostgreSQL 17 is not installed.*15, 16"):
        resolve_version("", tmp_path, default="17")
    assert resolve_version("15", tmp_path) == ("15", tmp_path / "15" / "bin")
    with pytest.raises(InvalidArgument) as err:
        resolve_version("99", tmp_path)
    assert err.value.field == "postgres_version"
    assert err.value.reason == "PostgreSQL 99 is not installed on this host; available: 15, 16"


def test_resolve_version_none_installed(tmp_path: Path) -> None:
    assert installed_versions(tmp_path / "missing") == {}
    with pytest.raises(InvalidArgument, match="postgres_version"):
        resolve_version("", tmp_path)


def test_real_host_has_postgres() -> None:
    version, bindir = resolve_version("")
    assert (bindir / "postgres").exists() and version.isdigit()


def test_size_classes() -> None:
    assert size_class("") == SIZE_CLASSES["small"]
    assert size_class("nano").shared_buffers_mb <= 16
    assert size_class("nano").max_connections <= 20
    assert size_class("large").shared_buffers_mb == 2048
    assert list(SIZE_CLASSES) == ["nano", "small", "medium", "large"]
    sizes = [c.shared_buffers_mb for c in SIZE_CLASSES.values()]
    assert sizes == sorted(sizes)
    with pytest.raises(InvalidArgument) as err:
        size_class("huge")
    assert err.value.field == "size_class"
    assert "must be one of nano, small, medium, large" in err.value.reason


@pytest.mark.parametrize(
    ("args", "uri"),
    [
        (("db.example", 5432, "postgres", "pw", "postgres"), "postgresql://postgres:pw@db.example:5432/postgres"),
        (("10.0.0.1", 1, "a b", "p@ss:w/rd%", "my db/x"), "postgresql://a%20b:p%40ss%3Aw%2Frd%25@10.0.0.1:1/my%20db%2Fx"),
        (("::1", 5432, "u", "p", "d"), "postgresql://u:p@[::1]:5432/d"),
        (("/run/cygnet/s/a", 5432, "u", "p", "d"), "postgresql://u:p@:5432/d?host=%2Frun%2Fcygnet%2Fs%2Fa"),
    ],
)
def test_connection_uri(args: tuple[str, int, str, str, str], uri: str) -> None:
    assert connection_uri(*args) == uri
