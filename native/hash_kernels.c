/* XXH3-128 block kernels. Debian's libxxhash is built for baseline x86-64
 * (SSE2); an AVX2 copy of XXH3 inlined here roughly doubles hashing speed
 * and is picked at run time when the CPU has AVX2. Digests are identical. */
#include "hash_kernels.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

static void hash_blocks_generic(const unsigned char *data, size_t len, unsigned char *out)
{
    for (size_t off = 0; off < len; off += CYG_KERNEL_BLOCK, out += 16) {
        size_t n = len - off < CYG_KERNEL_BLOCK ? len - off : CYG_KERNEL_BLOCK;
        XXH128_canonicalFromHash((XXH128_canonical_t *)out, XXH3_128bits(data + off, n));
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define CYG_HAVE_AVX2_KERNEL 1
void cyg_hash_blocks_avx2(const unsigned char *data, size_t len, unsigned char *out);
#endif

void cyg_hash_blocks(const unsigned char *data, size_t len, unsigned char *out)
{
#ifdef CYG_HAVE_AVX2_KERNEL
    static int use_avx2 = -1;
    if (use_avx2 < 0)
        use_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    if (use_avx2) {
        cyg_hash_blocks_avx2(data, len, out);
        return;
    }
#endif
    hash_blocks_generic(data, len, out);
}
