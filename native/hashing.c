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

#include "hash_kernels.h"
#include "parallel_hash.h"

/* Large sequential reads amortise syscalls; a multiple of the block size so
 * that only the last chunk of a file can end in a partial block. */
#define READ_CHUNK (4u << 20)
/* Below this size releasing the GIL costs more than it buys. */
#define NOGIL_MIN (64u << 10)

_Static_assert(READ_CHUNK % CYG_BLOCK_SIZE == 0, "chunk must hold whole blocks");

static size_t block_count(size_t len) { return (len + CYG_BLOCK_SIZE - 1) / CYG_BLOCK_SIZE; }

_Static_assert(CYG_KERNEL_BLOCK == CYG_BLOCK_SIZE, "one block size");

static void hash_blocks(const unsigned char *data, size_t len, unsigned char *out)
{
    cyg_hash_blocks(data, len, out);
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

/* Growable digest array, allocated with the raw allocator (no GIL needed). */
typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} digest_buf;

static int digest_buf_reserve(digest_buf *d, size_t extra)
{
    if (d->len + extra <= d->cap)
        return 0;
    size_t cap = d->cap ? d->cap : 4096;
    while (cap < d->len + extra)
        cap *= 2;
    unsigned char *p = PyMem_RawRealloc(d->data, cap);
    if (p == NULL)
        return ENOMEM;
    d->data = p;
    d->cap = cap;
    return 0;
}

/* Reads and hashes one chunk. Returns 0, an errno value, or -1 at EOF. */
static int hash_next_chunk(int fd, unsigned char *buf, digest_buf *out)
{
    size_t got;
    int err = cyg_read_full(fd, buf, READ_CHUNK, -1, &got);
    if (err)
        return err;
    if (got == 0)
        return -1;
    err = digest_buf_reserve(out, block_count(got) * CYG_DIGEST_SIZE);
    if (err)
        return err;
    hash_blocks(buf, got, out->data + out->len);
    out->len += block_count(got) * CYG_DIGEST_SIZE;
    return got < READ_CHUNK ? -1 : 0;
}

/* The GIL is released per chunk, so signals (Ctrl-C) are still seen
 * between chunks of a large file. Returns 0 or an errno value. */
static int hash_fd(int fd, digest_buf *out)
{
    unsigned char *buf = PyMem_RawMalloc(READ_CHUNK);
    if (buf == NULL)
        return ENOMEM;
    int rc = 0;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        rc = hash_next_chunk(fd, buf, out);
        Py_END_ALLOW_THREADS
        if (rc != 0)
            break;
        if (PyErr_CheckSignals() < 0) {
            rc = -2;
            break;
        }
    }
    PyMem_RawFree(buf);
    return rc == -1 ? 0 : rc;
}

/* Returns a descriptor or -errno; *size is the regular file's size, else 0. */
static int open_for_hashing(const char *path, digest_buf *out, size_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    *size = 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        *size = (size_t)st.st_size;
        if (digest_buf_reserve(out, block_count(*size) * CYG_DIGEST_SIZE) != 0)
            *size = 0;
    }
    /* Advisory only: a failure changes speed, never the result. */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return fd;
}

/* A large file is split among threads. If its size is not what fstat said
 * (it changed meanwhile), the result is thrown away and the file is read
 * again from the start, one chunk at a time, to its real end. Returns 0,
 * an errno value, or 1 when the caller must do that sequential pass. */
static int hash_fd_in_ranges(int fd, size_t size, digest_buf *out)
{
    int threads = cyg_threads_for(size);
    if (threads < 2)
        return 1;
    unsigned char probe;
    int err = cyg_hash_fd_parallel(fd, size, out->data, threads);
    if (err == 0 && pread(fd, &probe, 1, (off_t)size) != 0)
        err = -1; /* it grew, or the probe failed: redo it the plain way */
    if (err == 0)
        out->len = block_count(size) * CYG_DIGEST_SIZE;
    if (err != -1)
        return err;
    return lseek(fd, 0, SEEK_SET) < 0 ? errno : 1;
}

static PyObject *hash_file(PyObject *Py_UNUSED(module), PyObject *arg)
{
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path))
        return NULL;
    digest_buf out = {NULL, 0, 0};
    int fd, ranged = 1;
    size_t size = 0;
    Py_BEGIN_ALLOW_THREADS
    fd = open_for_hashing(PyBytes_AS_STRING(path), &out, &size);
    if (fd >= 0)
        ranged = hash_fd_in_ranges(fd, size, &out);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (fd < 0) {
        errno = -fd;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, arg);
        goto done;
    }
    int err = ranged == 1 ? hash_fd(fd, &out) : ranged;
    close(fd);
    if (err > 0) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, arg);
    } else if (err == 0) {
        result = PyBytes_FromStringAndSize((const char *)out.data, (Py_ssize_t)out.len);
    } /* err == -2: a signal handler raised; its exception is set. */
done:
    PyMem_RawFree(out.data);
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
