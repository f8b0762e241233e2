"""Client contexts: named daemons in ~/.config/cygnet/config.toml, kubeconfig style.

    current-context = "prod"

    [contexts.prod]
    host = "db7.example:7433"
    ca = "~/.config/cygnet/prod/ca.pem"
    cert = "~/.config/cygnet/prod/client.pem"
    key = "~/.config/cygnet/prod/client.key"

    [contexts.local]
    socket = "/run/cygnet/cygnetd.sock"

`--context NAME` (or CYGNET_CONTEXT) picks one, else `current-context`. A flag
or environment variable given explicitly wins over the context. Relative paths
are relative to the file. Read with the standard library's tomllib: the CLI
must not load the daemon's settings library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cygnet.cli.errors import CliError, Exit

# Context keys and the global option each one fills in.
KEYS = {"socket": "socket_path", "host": "host", "ca": "ca", "cert": "cert", "key": "key",
        "server-name": "server_name", "timeout": "timeout", "coordinator": "coordinator"}
PATH_KEYS = {"socket", "ca", "cert", "key"}


def config_path() -> Path:
    if os.environ.get("CYGNET_CONFIG"):
        return Path(os.environ["CYGNET_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cygnet" / "config.toml"


@dataclass(frozen=True)
class Config:
    path: Path
    current: str | None
    contexts: dict[str, dict[str, Any]]


def load(path: Path | None = None) -> Config:
    """The config file; an absent file is an empty config, a broken one an error."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Config(path, None, {})
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"config: cannot read {path}: {exc}", Exit.INVALID) from exc
    import tomllib  # only when there is a file to read

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"config: {path} is not valid TOML: {exc}", Exit.INVALID) from exc
    contexts = data.get("contexts", {})
    current = data.get("current-context")
    if not isinstance(contexts, dict) or not all(isinstance(c, dict) for c in contexts.values()):
        raise CliError(f"config: {path}: [contexts.NAME] must be tables", Exit.INVALID)
    if current is not None and not isinstance(current, str):
        raise CliError(f"config: {path}: current-context must be a string", Exit.INVALID)
    return Config(path, current, contexts)


def settings(config: Config, name: str) -> dict[str, Any]:
    """The global option values of context `name`, paths resolved, keys checked."""
    if name not in config.contexts:
        known = ", ".join(sorted(config.contexts)) or "none"
        raise CliError(f"context: no context {name!r} in {config.path} (known: {known})",
                       Exit.INVALID)
    values: dict[str, Any] = {}
    for key, value in config.contexts[name].items():
        if key not in KEYS:
            raise CliError(f"context: {name}.{key} in {config.path} is not a known key "
                           f"(known: {', '.join(KEYS)})", Exit.INVALID)
        if key == "timeout":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0.1:
                raise CliError(f"context: {name}.timeout must be a number >= 0.1",
                               Exit.INVALID)
            values[KEYS[key]] = float(value)
            continue
        if not isinstance(value, str) or not value:
            raise CliError(f"context: {name}.{key} must be a non-empty string", Exit.INVALID)
        if key in PATH_KEYS:
            values[KEYS[key]] = config.path.parent / Path(value).expanduser()
        else:
            values[KEYS[key]] = value
    return values
