"""The checked-in generated protobuf code must match proto/: rebuild with scripts/gen-proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness import REPO

GENERATED = REPO / "daemon" / "cygnet" / "api" / "v1"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    env = {"PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    subprocess.run([str(REPO / "scripts" / "gen-proto"), str(tmp_path)], check=True, env=env,
                   capture_output=True)
    fresh = {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file()}
    current = {p.name: p.read_text() for p in GENERATED.iterdir() if p.is_file()}
    assert fresh.keys() == current.keys()
    stale = [name for name in fresh if fresh[name] != current[name]]
    assert not stale, f"stale generated code: {stale}; run scripts/gen-proto"
