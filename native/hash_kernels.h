/* Block hashing kernels (no Python API: callable without the GIL). */
#ifndef CYG_HASH_KERNELS_H
#define CYG_HASH_KERNELS_H
#include <stddef.h>

#define CYG_KERNEL_BLOCK 8192

/* Writes the canonical XXH3-128 digest of each 8 KiB block of data (last
 * one partial) to out, 16 bytes per block. */
void cyg_hash_blocks(const unsigned char *data, size_t len, unsigned char *out);

#endif
