"""Builds the C extension in native/ as part of `pip install .`."""

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


C_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"]


class BuildWithPostgresParts(build_ext):
    """Also builds the two pieces Postgres itself runs:
    - native/wal/cygnet_wal.c into cygnet/bin/cygnet-wal: Postgres' WAL
      archive_command and restore_command (one exec per segment, no interpreter);
    - native/handoff/cygnet_handoff.c into cygnet/lib/cygnet_handoff.so: the
      postmasters' LD_PRELOAD, which takes clients from the endpoint."""

    def run(self) -> None:
        super().run()
        base = Path("daemon") if self.inplace else Path(self.build_lib)
        bin_dir, lib_dir = base / "cygnet" / "bin", base / "cygnet" / "lib"
        bin_dir.mkdir(parents=True, exist_ok=True)
        lib_dir.mkdir(parents=True, exist_ok=True)
        objects = self.compiler.compile(["native/wal/cygnet_wal.c"],
                                        output_dir=self.build_temp, extra_postargs=C_FLAGS)
        self.compiler.link_executable(objects, "cygnet-wal", output_dir=str(bin_dir))
        objects = self.compiler.compile(["native/handoff/cygnet_handoff.c"],
                                        output_dir=self.build_temp,
                                        extra_postargs=[*C_FLAGS, "-fPIC"])
        self.compiler.link_shared_object(objects, "cygnet_handoff.so",
                                         output_dir=str(lib_dir), libraries=["dl"])


setup(
    cmdclass={"build_ext": BuildWithPostgresParts},
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
