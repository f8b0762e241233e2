"""native/relay_core.c under AddressSanitizer and UBSan, driven by native/relay_test.c."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

NATIVE = Path(__file__).resolve().parents[2] / "native"


def test_relay_core_under_asan_and_ubsan(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc is needed to build native/"
    binary = tmp_path / "relay_test"
    build = subprocess.run(
        [gcc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1",
         "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "relay_test.c", "relay_core.c", "-lpthread", "-lssl", "-lcrypto", "-o", str(binary)],
        cwd=NATIVE, capture_output=True, text=True, timeout=120, check=False)
    assert build.returncode == 0, build.stderr
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "ASAN_OPTIONS": "abort_on_error=0:halt_on_error=1:detect_leaks=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    run = subprocess.run([str(binary)], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK: 0 failed checks" in run.stdout
    assert "ERROR: AddressSanitizer" not in run.stderr
    assert "runtime error" not in run.stderr
