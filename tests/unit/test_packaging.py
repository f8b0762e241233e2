"""Packaging: `python -m build` makes a wheel and an sdist with the license, one
version, the daemons' dependencies in an extra, and the docs the systemd units
point at; the CLI works without the daemons' dependencies."""

from __future__ import annotations

import email
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import cygnet
from cygnet.entrypoints import DAEMON_MODULES
from tests.harness import REPO

# Makes the daemon-only packages unimportable, as in a CLI-only install.
BLOCK = "import sys\nfor m in {mods!r}: sys.modules[m] = None\n"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    # No isolation: the venv's setuptools (scripts/setup), no download, one compile.
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                           str(REPO)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield out


def wheel_metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.message_from_bytes(wheel.read(name))


def test_wheel_and_sdist(dist: Path) -> None:
    (wheel_path,) = dist.glob("cygnet-*.whl")
    (sdist_path,) = dist.glob("cygnet-*.tar.gz")
    assert wheel_path.name.startswith(f"cygnet-{cygnet.__version__}-")
    with zipfile.ZipFile(wheel_path) as wheel:
        meta = wheel_metadata(wheel)
        names = wheel.namelist()
    assert meta["Version"] == cygnet.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert any(re.fullmatch(r"cygnet/_native\..*\.so", n) for n in names)
    requires = meta.get_all("Requires-Dist") or []
    base = {re.split(r"[<>=\[;]", r)[0] for r in requires if "extra ==" not in r}
    daemon = {re.split(r"[<>=\[;]", r)[0] for r in requires if 'extra == "daemon"' in r}
    assert base == {"grpcio", "protobuf", "cryptography", "click", "rich"}
    assert set(DAEMON_MODULES.values()) == daemon
    with tarfile.open(sdist_path) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {"LICENSE", "CHANGELOG.md", "pyproject.toml", "native/spawn_core.h"} <= members


def test_the_units_documentation_is_installed(dist: Path) -> None:
    (wheel_path,) = dist.glob("cygnet-*.whl")
    with zipfile.ZipFile(wheel_path) as wheel:
        data = {n.split(".data/data/", 1)[1] for n in wheel.namelist() if ".data/data/" in n}
    units = [*(REPO / "deploy/systemd").glob("*.service"),
             *(REPO / "ansible/roles").glob("*/templates/*.service.j2")]
    assert len(units) >= 4
    for unit in units:
        # The venv: /opt/cygnet/venv, or the role's venv setting.
        (doc,) = re.findall(r"^Documentation=file://(?:\{\{ \w+_venv \}\}|/opt/cygnet/venv)/(\S+)$",
                            unit.read_text(), re.M)
        assert doc in data, f"{unit.name}: {doc} is not installed"


def test_one_version_string() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r"^version\s*=", project, re.M) is None
    assert 'version = {attr = "cygnet.__version__"}' in pyproject
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert f"## {cygnet.__version__}" in (REPO / "CHANGELOG.md").read_text()


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK.format(mods=list(DAEMON_MODULES)) + code],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_cli_runs_without_the_daemon_extra() -> None:
    done = python("import sys; from cygnet.cli.main import main\n"
                  "sys.argv = ['cygnet', '--help']; main()")
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout
    # Every CLI module, not only what --help loads.
    done = python("import importlib, pkgutil, cygnet.cli\n"
                  "for m in pkgutil.walk_packages(cygnet.cli.__path__, 'cygnet.cli.'):\n"
                  "    importlib.import_module(m.name)\n")
    assert done.returncode == 0, done.stderr


def test_the_daemons_name_the_missing_extra() -> None:
    for entry, prog in (("cygnetd", "cygnetd"), ("coordinator", "cygnet-coordinator")):
        done = python(f"from cygnet.entrypoints import {entry}; {entry}()")
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        assert f"{prog}: needs the daemon extra" in done.stderr
        assert "systemd-python" in done.stderr and "pip install 'cygnet[daemon]'" in done.stderr
