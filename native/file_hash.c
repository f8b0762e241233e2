/* Per-block hashing of a file (see file_hash.h). Everything here runs
 * without the GIL; hashing.c is the Python side. */
#define _POSIX_C_SOURCE 200809L /* posix_fadvise, pread under -std=c11 */
#include "file_hash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash_kernels.h"
#include "parallel_hash.h"

_Static_assert(CYG_READ_CHUNK % CYG_KERNEL_BLOCK == 0, "chunk must hold whole blocks");

static size_t block_count(size_t len) { return (len + CYG_KERNEL_BLOCK - 1) / CYG_KERNEL_BLOCK; }

static cyg_hash_rc reserve(cyg_digests *d, size_t extra)
{
    if (d->len + extra <= d->cap)
        return CYG_HASH_OK;
    size_t cap = d->cap ? d->cap : 4096;
    while (cap < d->len + extra)
        cap *= 2;
    unsigned char *p = realloc(d->data, cap);
    if (p == NULL)
        return CYG_HASH_NO_MEMORY;
    d->data = p;
    d->cap = cap;
    return CYG_HASH_OK;
}

cyg_hash_rc cyg_hash_next_chunk(int fd, unsigned char *buf, cyg_digests *out, int *err)
{
    size_t got;
    cyg_hash_rc rc = cyg_read_full(fd, buf, CYG_READ_CHUNK, -1, &got, err);
    if (rc != CYG_HASH_OK)
        return rc;
    if (got == 0)
        return CYG_HASH_EOF;
    rc = reserve(out, block_count(got) * 16);
    if (rc != CYG_HASH_OK)
        return rc;
    cyg_hash_blocks(buf, got, out->data + out->len);
    out->len += block_count(got) * 16;
    return got < CYG_READ_CHUNK ? CYG_HASH_EOF : CYG_HASH_OK;
}

cyg_hash_rc cyg_hash_open(const char *path, cyg_digests *out, int *fd, size_t *size, int *err)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        *err = errno;
        return CYG_HASH_OS_ERROR;
    }
    struct stat st;
    *size = 0;
    if (fstat(*fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        *size = (size_t)st.st_size;
        if (reserve(out, block_count(*size) * 16) != CYG_HASH_OK)
            *size = 0;
    }
    /* Advisory only: a failure changes speed, never the result. */
    (void)posix_fadvise(*fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return CYG_HASH_OK;
}

/* If the file's size is not what fstat said (it changed meanwhile), the
 * result is thrown away and the caller reads it again from the start, one
 * chunk at a time, to its real end. */
cyg_hash_rc cyg_hash_ranges(int fd, size_t size, cyg_digests *out, int *err)
{
    int threads = cyg_threads_for(size);
    if (threads < 2)
        return CYG_HASH_SEQUENTIAL;
    unsigned char probe;
    cyg_hash_rc rc = cyg_hash_fd_parallel(fd, size, out->data, threads, err);
    if (rc == CYG_HASH_OK && pread(fd, &probe, 1, (off_t)size) != 0)
        rc = CYG_HASH_SHORT; /* it grew, or the probe failed: redo it the plain way */
    if (rc == CYG_HASH_OK)
        out->len = block_count(size) * 16;
    if (rc != CYG_HASH_SHORT)
        return rc;
    if (lseek(fd, 0, SEEK_SET) < 0) {
        *err = errno;
        return CYG_HASH_OS_ERROR;
    }
    return CYG_HASH_SEQUENTIAL;
}
