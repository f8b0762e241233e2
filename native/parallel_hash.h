/* Multi-threaded hashing of one large file (see parallel_hash.c). */
#ifndef CYGNET_PARALLEL_HASH_H
#define CYGNET_PARALLEL_HASH_H

#include <stddef.h>
#include <sys/types.h>

#include "file_hash.h"

/* Files below this are hashed by one thread: starting threads costs more. */
#define CYG_PARALLEL_MIN ((size_t)32 << 20)

/* How many threads hash a file of `size` bytes: 1 below CYG_PARALLEL_MIN,
 * else up to one per online CPU (at most 8, and one per 16 MiB). */
int cyg_threads_for(size_t size);

/* Hashes the first `size` bytes of fd into out (16 bytes per 8 KiB block,
 * room for all of them). Returns OK, SHORT if the file holds fewer than
 * `size` bytes, NO_MEMORY, or OS_ERROR with errno in *err. */
cyg_hash_rc cyg_hash_fd_parallel(int fd, size_t size, unsigned char *out, int threads, int *err);

/* Reads `want` bytes into buf, retrying short reads, so that only end of file
 * yields fewer (*got). At offset `off` with pread, or with read() at the
 * file position when off < 0. Returns OK, or OS_ERROR with errno in *err. */
cyg_hash_rc cyg_read_full(int fd, unsigned char *buf, size_t want, off_t off, size_t *got,
                          int *err);

#endif
