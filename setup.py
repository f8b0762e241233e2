"""Builds the C extension in native/ as part of `pip install .`."""

from setuptools import Extension, setup

setup(
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
            ],
            depends=["native/cygnet_native.h", "native/hash_kernels.h", "native/parallel_hash.h",
                     "native/spawn_core.h", "native/dedup_table.h", "native/file_hash.h"],
            libraries=["xxhash", "pthread"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Werror"],
        )
    ]
)
