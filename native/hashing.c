/* Per-block hashing of files and buffers, and diffing of digest arrays.
 *
 * A digest array is the concatenation of 16-byte XXH3-128 digests in
 * canonical (big-endian) order, one per 8 KiB block; a final partial block
 * is hashed as its actual bytes, so equal arrays mean equal contents. */
#include "cygnet_native.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file_hash.h"
#include "hash_kernels.h"

/* Below this size releasing the GIL costs more than it buys. */
#define NOGIL_MIN (64u << 10)

static size_t block_count(size_t len) { return (len + CYG_BLOCK_SIZE - 1) / CYG_BLOCK_SIZE; }

_Static_assert(CYG_KERNEL_BLOCK == CYG_BLOCK_SIZE, "one block size");

static void hash_blocks(const unsigned char *data, size_t len, unsigned char *out)
{
    cyg_hash_blocks(data, len, out);
}

/* Raises the Python exception for a failed cyg_hash_rc. */
static void set_hash_error(cyg_hash_rc rc, int err, PyObject *path)
{
    if (rc == CYG_HASH_NO_MEMORY) {
        PyErr_NoMemory();
    } else if (rc == CYG_HASH_OS_ERROR) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    } else {
        PyErr_Format(PyExc_RuntimeError, "hashing %R: unexpected status %d", path, (int)rc);
    }
}

static PyObject *hash_bytes(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    size_t len = (size_t)view.len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(block_count(len) * CYG_DIGEST_SIZE));
    if (out != NULL) {
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
        if (len >= NOGIL_MIN) {
            Py_BEGIN_ALLOW_THREADS
            hash_blocks(view.buf, len, dst);
            Py_END_ALLOW_THREADS
        } else {
            hash_blocks(view.buf, len, dst);
        }
    }
    PyBuffer_Release(&view);
    return out;
}

/* Hashes chunk by chunk from the file offset; the GIL is released per chunk,
 * so signals (Ctrl-C) are still seen between chunks of a large file. Returns
 * 0, or -1 with an exception set. */
static int hash_sequential(int fd, cyg_digests *out, PyObject *path)
{
    unsigned char *buf = PyMem_RawMalloc(CYG_READ_CHUNK);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    cyg_hash_rc rc = CYG_HASH_OK;
    int err = 0;
    while (rc == CYG_HASH_OK) {
        Py_BEGIN_ALLOW_THREADS
        rc = cyg_hash_next_chunk(fd, buf, out, &err);
        Py_END_ALLOW_THREADS
        if (rc == CYG_HASH_OK && PyErr_CheckSignals() < 0)
            break; /* a signal handler raised; its exception is set */
    }
    PyMem_RawFree(buf);
    if (rc == CYG_HASH_EOF)
        return 0;
    if (rc == CYG_HASH_OK)
        return -1;
    set_hash_error(rc, err, path);
    return -1;
}

static PyObject *hash_file(PyObject *Py_UNUSED(module), PyObject *arg)
{
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path))
        return NULL;
    cyg_digests out = {NULL, 0, 0};
    int fd = -1, err = 0;
    size_t size = 0;
    cyg_hash_rc rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cyg_hash_open(PyBytes_AS_STRING(path), &out, &fd, &size, &err);
    if (rc == CYG_HASH_OK)
        rc = cyg_hash_ranges(fd, size, &out, &err);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (rc == CYG_HASH_SEQUENTIAL && hash_sequential(fd, &out, arg) == 0)
        rc = CYG_HASH_OK;
    else if (rc != CYG_HASH_OK && rc != CYG_HASH_SEQUENTIAL)
        set_hash_error(rc, err, arg);
    if (rc == CYG_HASH_OK)
        result = PyBytes_FromStringAndSize((const char *)out.data, (Py_ssize_t)out.len);
    if (fd >= 0)
        close(fd);
    free(out.data);
    Py_DECREF(path);
    return result;
}

static int get_digest_array(PyObject *obj, Py_buffer *view, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len % CYG_DIGEST_SIZE != 0) {
        PyErr_Format(PyExc_ValueError, "%s: length %zd is not a multiple of %d", name,
                     view->len, CYG_DIGEST_SIZE);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static size_t count_differing(const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
    size_t common = na < nb ? na : nb, count = 0;
    for (size_t i = 0; i < common; i++)
        count += memcmp(a + i * CYG_DIGEST_SIZE, b + i * CYG_DIGEST_SIZE, CYG_DIGEST_SIZE) != 0;
    return count + (na > nb ? na - nb : nb - na);
}

/* Two passes: count without the GIL, then fill a list of exactly that size,
 * so no index array proportional to the file is ever allocated. */
static PyObject *build_diff_list(const unsigned char *a, size_t na, const unsigned char *b,
                                 size_t nb, size_t count)
{
    PyObject *list = PyList_New((Py_ssize_t)count);
    if (list == NULL)
        return NULL;
    size_t n = na > nb ? na : nb, common = na < nb ? na : nb, k = 0;
    for (size_t i = 0; i < n && k < count; i++) {
        if (i < common &&
            memcmp(a + i * CYG_DIGEST_SIZE, b + i * CYG_DIGEST_SIZE, CYG_DIGEST_SIZE) == 0)
            continue;
        PyObject *idx = PyLong_FromSize_t(i);
        if (idx == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)k++, idx);
    }
    /* A bytearray changed by another thread between the passes: trim. */
    if (k < count && PyList_SetSlice(list, (Py_ssize_t)k, (Py_ssize_t)count, NULL) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

static PyObject *diff_digests(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "diff_digests expected 2 arguments, got %zd", nargs);
        return NULL;
    }
    Py_buffer va, vb;
    if (get_digest_array(args[0], &va, "a") < 0)
        return NULL;
    if (get_digest_array(args[1], &vb, "b") < 0) {
        PyBuffer_Release(&va);
        return NULL;
    }
    size_t na = (size_t)va.len / CYG_DIGEST_SIZE, nb = (size_t)vb.len / CYG_DIGEST_SIZE, count;
    Py_BEGIN_ALLOW_THREADS
    count = count_differing(va.buf, na, vb.buf, nb);
    Py_END_ALLOW_THREADS
    PyObject *list = build_diff_list(va.buf, na, vb.buf, nb, count);
    PyBuffer_Release(&va);
    PyBuffer_Release(&vb);
    return list;
}

PyMethodDef cyg_hashing_methods[] = {
    {"hash_bytes", hash_bytes, METH_O,
     "hash_bytes(data) -> bytes\n\nXXH3-128 digest of every 8 KiB block of data, concatenated."},
    {"hash_file", hash_file, METH_O,
     "hash_file(path) -> bytes\n\nXXH3-128 digest of every 8 KiB block of a file, concatenated."},
    {"diff_digests", (PyCFunction)(void (*)(void))diff_digests, METH_FASTCALL,
     "diff_digests(a, b) -> list[int]\n\nIndexes of blocks whose digests differ; a block "
     "present on one side only differs."},
    {NULL, NULL, 0, NULL},
};
