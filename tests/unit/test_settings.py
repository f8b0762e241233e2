"""Daemon settings: typed TOML, errors that name the key and the file, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cygnet.agent.config import AgentConfig
from cygnet.agent.config import load_config as load_agent
from cygnet.coordinator.config import load_config as load_coordinator
from cygnet.errors import InvalidArgument


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cygnetd.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "key", "reason"), [
    ('pools = "tank"', "pools", "expected array, got str"),
    ('pools = ["tank"]\nport_min = "54000"', "port_min", "expected int, got str"),
    ('pools = ["tank"]\nport_max = true', "port_max", "expected int, got bool"),
    ('pools = ["tank"]\nmount_root = 5', "mount_root", "expected path"),
    ('pools = ["tank"]\nlabels = { rack = 3 }', "labels", "expected str, got int"),
    ('pools = ["tank"]\nsupervise_interval = "1s"', "supervise_interval", "expected float"),
])
def test_a_wrong_type_names_the_key_and_the_file(tmp_path: Path, text: str, key: str,
                                                 reason: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InvalidArgument) as err:
        load_agent(path, {})
    assert err.value.field == key
    assert reason in err.value.reason and str(path) in err.value.reason


def test_values_get_their_types(tmp_path: Path) -> None:
    path = _write(tmp_path, 'pools = ["tank", "fast"]\nbackup_dir = ""\ntls_cert = "/etc/c.pem"\n'
                            "supervise_interval = 2\nlabels = { rack = \"r1\" }\n")
    config = load_agent(path, {"state_dir": Path("/srv/cygnet"), "port_min": 60000,
                               "port_max": 60010, "listen": None})
    assert config.pools == ("tank", "fast")
    assert config.backup_dir is None and config.tls_cert == Path("/etc/c.pem")
    assert config.supervise_interval == 2.0 and isinstance(config.supervise_interval, float)
    assert config.labels == {"rack": "r1"} and config.state_dir == Path("/srv/cygnet")
    assert config.listen == AgentConfig.listen  # None on the command line: not given


def test_unknown_and_removed_keys_are_refused(tmp_path: Path) -> None:
    for key in ("colour", "extra"):
        path = _write(tmp_path, f'pools = ["tank"]\n{key} = {{}}\n')
        with pytest.raises(InvalidArgument, match=f"unknown settings: {key} \\(in {path}\\)"):
            load_agent(path, {})


def test_a_bad_override_names_the_command_line() -> None:
    with pytest.raises(InvalidArgument, match=r"expected int, got str \(in command line\)"):
        load_agent(None, {"pools": ["tank"], "memory_bytes": "lots"})


def test_coordinator_settings_are_typed(tmp_path: Path) -> None:
    path = _write(tmp_path, 'heartbeat_interval = 2\nmissed_heartbeats = "3"\n')
    with pytest.raises(InvalidArgument) as err:
        load_coordinator(path, {})
    assert err.value.field == "missed_heartbeats" and str(path) in err.value.reason
    path.write_text('heartbeat_interval = 2\ntokens_file = ""\n')
    config = load_coordinator(path, {"tls_ca": Path("/etc/ca.pem")})
    assert config.heartbeat_interval == 2.0 and config.tokens_file is None
    assert config.tls_ca == Path("/etc/ca.pem")


def test_cygnetd_exits_with_one_line_naming_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, 'pools = ["tank"]\nport_min = "54000"\n')
    run = subprocess.run([sys.executable, "-m", "cygnet.agent.main", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"cygnetd: port_min: expected int, got str (in {path})"]


def test_the_cli_does_not_import_the_settings_library() -> None:
    code = ("import sys, cygnet.cli.main; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'msgspec', 'pydantic', "
            "'pydantic_settings', 'cygnet'}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert run.stdout.strip() == "['cygnet']"


def test_record_size_is_a_zfs_record_size_or_empty() -> None:
    assert AgentConfig(pools=("tank",), record_size="16K").validate().record_size == "16K"
    assert AgentConfig(pools=("tank",)).validate().record_size == ""  # automatic
    with pytest.raises(InvalidArgument, match="record_size") as err:
        AgentConfig(pools=("tank",), record_size="12K").validate()
    assert "8K, 16K, 32K, 64K, 128K" in str(err.value)
