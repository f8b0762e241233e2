"""The C tests of native/ under AddressSanitizer and UBSan, and a warning-free build.

native/tests/test_native_c.c drives the parts without Python (dedup table,
file hashing, detached spawn) directly; a sanitizer finding aborts it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "native"
CORE_SOURCES = ["dedup_table.c", "file_hash.c", "parallel_hash.c", "hash_kernels.c",
                "hash_kernels_avx2.c", "spawn_core.c"]
WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build native/ and its tests")
    return gcc


class _RunOptions(TypedDict, total=False):
    cwd: Path
    env: dict[str, str]


def _run(argv: list[str], **kwargs: Unpack[_RunOptions]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          **kwargs)


def test_c_tests_pass_under_asan_and_ubsan(tmp_path: Path) -> None:
    binary = tmp_path / "test_native_c"
    build = _run([_gcc(), *WARNINGS, "-g", "-O1", "-fno-omit-frame-pointer",
                  "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                  "-DCYG_TEST_HOOKS", "tests/test_native_c.c", *CORE_SOURCES,
                  "-lxxhash", "-lpthread", "-o", str(binary)], cwd=NATIVE)
    assert build.returncode == 0, build.stderr
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "ASAN_OPTIONS": "abort_on_error=0:halt_on_error=1:detect_leaks=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    run = _run([str(binary)], env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK: 0 failed checks" in run.stdout
    assert "ERROR: AddressSanitizer" not in run.stderr
    assert "runtime error" not in run.stderr  # UBSan's wording


def test_extension_sources_build_without_warnings(tmp_path: Path) -> None:
    # setup.py builds with -Werror too; this catches a warning without a rebuild.
    # -O1 runs the flow analysis behind the maybe-uninitialized warnings.
    include = sysconfig.get_paths()["include"]
    sources = [str(path) for path in sorted(NATIVE.glob("*.c"))]
    build = _run([_gcc(), *WARNINGS, "-O1", "-fPIC", f"-I{include}", "-c", *sources],
                 cwd=tmp_path)
    assert build.returncode == 0, build.stderr
