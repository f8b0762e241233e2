/* Hashing a file into a digest array, without Python (file_hash.c), and the
 * return codes of every hashing function: one enum, with errno apart. */
#ifndef CYGNET_FILE_HASH_H
#define CYGNET_FILE_HASH_H

#include <stddef.h>

typedef enum {
    CYG_HASH_OK = 0,
    CYG_HASH_EOF,        /* the file ended: the digests are complete */
    CYG_HASH_SHORT,      /* the file holds fewer bytes than its size said */
    CYG_HASH_SEQUENTIAL, /* the caller must hash it chunk by chunk instead */
    CYG_HASH_NO_MEMORY,
    CYG_HASH_OS_ERROR, /* a system call failed; its errno is in *err */
} cyg_hash_rc;

/* Large sequential reads amortise syscalls; a multiple of the block size so
 * that only the last chunk of a file can end in a partial block. */
#define CYG_READ_CHUNK (4u << 20)

/* Growable digest array (malloc'd: usable without the GIL). */
typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} cyg_digests;

/* Opens path and, for a regular file, reserves its digests. *size is its
 * size, or 0 when unknown or the reservation failed (then it is read
 * sequentially). */
cyg_hash_rc cyg_hash_open(const char *path, cyg_digests *out, int *fd, size_t *size, int *err);
/* Hashes a large file with several threads. OK, SEQUENTIAL (too small, or
 * its size changed: the file offset is back at 0), or an error. */
cyg_hash_rc cyg_hash_ranges(int fd, size_t size, cyg_digests *out, int *err);
/* Reads and hashes the next chunk into buf (CYG_READ_CHUNK bytes). OK when
 * more may follow, EOF when the file is done, or an error. */
cyg_hash_rc cyg_hash_next_chunk(int fd, unsigned char *buf, cyg_digests *out, int *err);

#endif
