/* Shared declarations of the cygnet._native extension. */
#ifndef CYGNET_NATIVE_H
#define CYGNET_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* PostgreSQL page size: the unit of hashing, diffing and dedup. */
#define CYG_BLOCK_SIZE 8192
/* XXH3-128 digest, stored in canonical (big-endian) byte order. */
#define CYG_DIGEST_SIZE 16

extern PyMethodDef cyg_hashing_methods[];
extern PyMethodDef cyg_spawn_methods[];
extern PyMethodDef cyg_relay_methods[];
extern PyType_Spec cyg_dedup_index_spec;
int cyg_tls_exec(PyObject *module);

#endif
