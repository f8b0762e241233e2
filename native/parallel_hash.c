/* Hashing one large file with several threads, each reading and hashing its
 * own range with pread. One core tops out at the page-cache copy plus the
 * hash (~5 GB/s here); ranges on other cores add their bandwidth, and reads
 * through FUSE (zfs-fuse) overlap instead of queueing. Called without the
 * GIL; it touches no Python object. */
#define _POSIX_C_SOURCE 200809L /* pread under -std=c11 */
#include "parallel_hash.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "hash_kernels.h"

/* Small reads keep the buffer in L2 between the copy and the hash. */
#define RANGE_READ (256u << 10)
#define MAX_THREADS 8

_Static_assert(RANGE_READ % CYG_KERNEL_BLOCK == 0, "reads must hold whole blocks");

typedef struct {
    int fd;
    size_t start, end; /* byte range; start is a multiple of the block size */
    unsigned char *out; /* digests of the file, indexed from offset 0 */
    cyg_hash_rc rc;     /* OK, SHORT (the file ended early), or an error */
    int err;            /* errno when rc is CYG_HASH_OS_ERROR */
} range_job;

cyg_hash_rc cyg_read_full(int fd, unsigned char *buf, size_t want, off_t off, size_t *got,
                          int *err)
{
    *got = 0;
    while (*got < want) {
        ssize_t r = off < 0 ? read(fd, buf + *got, want - *got)
                            : pread(fd, buf + *got, want - *got, off + (off_t)*got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            return CYG_HASH_OS_ERROR;
        }
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return CYG_HASH_OK;
}

static void *hash_range(void *arg)
{
    range_job *job = arg;
    unsigned char *buf = malloc(RANGE_READ);
    if (buf == NULL) {
        job->rc = CYG_HASH_NO_MEMORY;
        return NULL;
    }
    for (size_t off = job->start; off < job->end && job->rc == CYG_HASH_OK;) {
        size_t want = job->end - off < RANGE_READ ? job->end - off : RANGE_READ, got;
        job->rc = cyg_read_full(job->fd, buf, want, (off_t)off, &got, &job->err);
        if (job->rc == CYG_HASH_OK && got < want)
            job->rc = CYG_HASH_SHORT;
        if (job->rc == CYG_HASH_OK)
            cyg_hash_blocks(buf, got, job->out + off / CYG_KERNEL_BLOCK * 16);
        off += got;
    }
    free(buf);
    return NULL;
}

int cyg_threads_for(size_t size)
{
    if (size < CYG_PARALLEL_MIN)
        return 1;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t by_size = size / (CYG_PARALLEL_MIN / 2);
    long n = cpus < 1 ? 1 : cpus;
    if ((size_t)n > by_size)
        n = (long)by_size;
    return n > MAX_THREADS ? MAX_THREADS : (int)n;
}

cyg_hash_rc cyg_hash_fd_parallel(int fd, size_t size, unsigned char *out, int threads, int *err)
{
    range_job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started = 1;
    size_t blocks = (size + CYG_KERNEL_BLOCK - 1) / CYG_KERNEL_BLOCK;
    size_t per = (blocks + (size_t)threads - 1) / (size_t)threads * CYG_KERNEL_BLOCK;
    for (int i = 0; i < threads; i++) {
        size_t start = per * (size_t)i, end = start + per < size ? start + per : size;
        jobs[i] = (range_job){fd, start < size ? start : size, end, out, CYG_HASH_OK, 0};
    }
    /* Range 0 runs here; a thread that cannot start leaves its range to us. */
    for (int i = 1; i < threads; i++) {
        if (pthread_create(&tids[i], NULL, hash_range, &jobs[i]) != 0)
            break;
        started++;
    }
    hash_range(&jobs[0]);
    for (int i = started; i < threads; i++)
        hash_range(&jobs[i]);
    const range_job *failed = NULL;
    for (int i = 0; i < threads; i++) {
        if (i > 0 && i < started)
            pthread_join(tids[i], NULL);
        if (failed == NULL && jobs[i].rc != CYG_HASH_OK)
            failed = &jobs[i];
    }
    if (failed == NULL)
        return CYG_HASH_OK;
    *err = failed->err;
    return failed->rc;
}
