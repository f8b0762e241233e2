/* Module definition of cygnet._native: block hashing, digest diffing, the
 * dedup index and detached process start. The functions live in hashing.c,
 * dedup_index.c and spawn.c. */
#include "cygnet_native.h"

static int native_exec(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &cyg_dedup_index_spec, NULL);
    if (type == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "DedupIndex", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    Py_DECREF(type);
    if (PyModule_AddIntConstant(module, "BLOCK_SIZE", CYG_BLOCK_SIZE) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "DIGEST_SIZE", CYG_DIGEST_SIZE) < 0)
        return -1;
    if (PyModule_AddFunctions(module, cyg_spawn_methods) < 0)
        return -1;
    if (PyModule_AddFunctions(module, cyg_relay_methods) < 0)
        return -1;
    return cyg_tls_exec(module);
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
    {0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_native",
    .m_doc = "Cygnet native hot paths: 8 KiB block hashing (XXH3-128), "
             "digest diffing and a dedup index.",
    .m_size = 0,
    .m_methods = cyg_hashing_methods,
    .m_slots = native_slots,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModuleDef_Init(&native_module); }
