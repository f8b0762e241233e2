/* The AVX2 build of the XXH3 block kernel; only called when the CPU has AVX2. */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2")
#include <stddef.h>

#define XXH_INLINE_ALL
#define XXH_NAMESPACE cyg_avx2_
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

void cyg_hash_blocks_avx2(const unsigned char *data, size_t len, unsigned char *out);

void cyg_hash_blocks_avx2(const unsigned char *data, size_t len, unsigned char *out)
{
    for (size_t off = 0; off < len; off += 8192, out += 16) {
        size_t n = len - off < 8192 ? len - off : 8192;
        XXH128_canonicalFromHash((XXH128_canonical_t *)out, XXH3_128bits(data + off, n));
    }
}
#else
typedef int cyg_no_avx2_kernel;
#endif
