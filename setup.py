"""Builds the C extension in native/ as part of `pip install .`."""

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildWithWalProgram(build_ext):
    """Also builds native/wal/cygnet_wal.c into cygnet/bin/cygnet-wal: Postgres' WAL
    archive_command and restore_command (one exec per segment, no interpreter)."""

    def run(self) -> None:
        super().run()
        base = Path("daemon") if self.inplace else Path(self.build_lib)
        dest = base / "cygnet" / "bin"
        dest.mkdir(parents=True, exist_ok=True)
        objects = self.compiler.compile(
            ["native/wal/cygnet_wal.c"], output_dir=self.build_temp,
            extra_postargs=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"])
        self.compiler.link_executable(objects, "cygnet-wal", output_dir=str(dest))


setup(
    cmdclass={"build_ext": BuildWithWalProgram},
    ext_modules=[
        Extension(
            "cygnet._native",
            sources=[
                "native/cygnet_native.c",
                "native/hashing.c",
                "native/dedup_index.c",
                "native/dedup_table.c",
                "native/file_hash.c",
                "native/hash_kernels.c",
                "native/hash_kernels_avx2.c",
                "native/parallel_hash.c",
                "native/spawn.c",
                "native/spawn_core.c",
                "native/relay.c",
                "native/relay_core.c",
                "native/tls.c",
            ],
            depends=["native/cygnet_native.h", "native/hash_kernels.h", "native/parallel_hash.h",
                     "native/spawn_core.h", "native/dedup_table.h", "native/file_hash.h",
                     "native/relay_core.h"],
            libraries=["xxhash", "pthread", "ssl", "crypto"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Werror"],
        )
    ]
)
