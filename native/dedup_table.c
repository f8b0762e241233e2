/* Open addressing with linear probing over a power-of-two table, for
 * DedupIndex (dedup_index.c). Real digests are uniform already, but the home
 * slot mixes all 16 bytes anyway so that structured keys (tests, crafted
 * data) cannot pile into one run. Removal uses backward-shift deletion (no
 * tombstones). The load factor stays at or below 0.7. */
#include "dedup_table.h"

#include <string.h>

#define MIN_CAPACITY 16

#ifdef CYG_TEST_HOOKS
#include <stdlib.h>
long cyg_table_allocs_left = -1;
static void *table_calloc(size_t n, size_t size)
{
    if (cyg_table_allocs_left == 0)
        return NULL;
    if (cyg_table_allocs_left > 0)
        cyg_table_allocs_left--;
    return calloc(n, size);
}
#define table_free free
#else
/* Python's raw allocator: no GIL needed, and visible to its memory hooks. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define table_calloc PyMem_RawCalloc
#define table_free PyMem_RawFree
#endif

static uint64_t fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static size_t home_of(const unsigned char *digest, size_t mask)
{
    uint64_t lo, hi;
    memcpy(&lo, digest, sizeof lo);
    memcpy(&hi, digest + 8, sizeof hi);
    return (size_t)fmix64(lo ^ (hi * 0x9e3779b97f4a7c15ULL)) & mask;
}

/* The slot holding digest, or the empty slot where it would go. */
static cyg_slot *find_slot(const cyg_table *t, const unsigned char *digest)
{
    size_t i = home_of(digest, t->mask);
    for (;;) {
        cyg_slot *s = &t->slots[i];
        if (!s->used || memcmp(s->digest, digest, CYG_TABLE_DIGEST) == 0)
            return s;
        i = (i + 1) & t->mask;
    }
}

cyg_slot *cyg_table_lookup(const cyg_table *t, const unsigned char *digest)
{
    if (t->slots == NULL)
        return NULL;
    cyg_slot *s = find_slot(t, digest);
    return s->used ? s : NULL;
}

/* Rehashes into a new array; the old one stays intact if allocation fails. */
static int resize(cyg_table *t, size_t capacity)
{
    cyg_slot *slots = table_calloc(capacity, sizeof(cyg_slot));
    if (slots == NULL)
        return -1;
    cyg_slot *old = t->slots;
    size_t old_cap = old ? t->mask + 1 : 0;
    t->slots = slots;
    t->mask = capacity - 1;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].used)
            *find_slot(t, old[i].digest) = old[i];
    table_free(old);
    return 0;
}

int cyg_table_reserve(cyg_table *t, size_t extra)
{
    size_t cap = t->slots ? t->mask + 1 : 0;
    if (extra > SIZE_MAX / 10 - t->count)
        return -1;
    size_t want = (t->count + extra) * 10;
    if (want <= cap * 7)
        return 0;
    size_t new_cap = cap ? cap : MIN_CAPACITY;
    while (want > new_cap * 7) {
        if (new_cap > SIZE_MAX / 2 / sizeof(cyg_slot))
            return -1;
        new_cap *= 2;
    }
    return resize(t, new_cap);
}

int cyg_table_insert(cyg_table *t, const unsigned char *digest, uint64_t pack_id,
                     uint64_t offset, uint32_t length, uint16_t slot)
{
    if (cyg_table_reserve(t, 1) < 0)
        return -1;
    cyg_slot *s = find_slot(t, digest);
    if (s->used)
        return 0;
    memcpy(s->digest, digest, CYG_TABLE_DIGEST);
    s->pack_id = pack_id;
    s->offset = offset;
    s->length = length;
    s->slot = slot;
    s->used = 1;
    t->count++;
    return 1;
}

/* Backward-shift deletion: pull later entries of the probe run into the
 * hole unless their home slot lies cyclically in (hole, j]. */
void cyg_table_remove(cyg_table *t, cyg_slot *s)
{
    size_t hole = (size_t)(s - t->slots), j = hole;
    for (;;) {
        j = (j + 1) & t->mask;
        if (!t->slots[j].used)
            break;
        size_t k = home_of(t->slots[j].digest, t->mask);
        int stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
        if (stays)
            continue;
        t->slots[hole] = t->slots[j];
        hole = j;
    }
    memset(&t->slots[hole], 0, sizeof(cyg_slot));
    t->count--;
}

void cyg_table_free(cyg_table *t)
{
    table_free(t->slots);
    *t = (cyg_table){NULL, 0, 0};
}

/* Room for all n is made first, so no insert below can fail: a frame is
 * indexed whole or not at all. */
long cyg_table_insert_frame(cyg_table *t, const unsigned char *digests, size_t n,
                            uint64_t pack_id, uint64_t offset, uint32_t length,
                            unsigned char *records)
{
    if (cyg_table_reserve(t, n) < 0)
        return -1;
    long added = 0;
    for (size_t k = 0; k < n; k++) {
        const unsigned char *d = digests + k * CYG_TABLE_DIGEST;
        if (cyg_table_insert(t, d, pack_id, offset, length, (uint16_t)k) == 0)
            continue;
        cyg_record_write(records + (size_t)added++ * CYG_RECORD_SIZE, cyg_table_lookup(t, d));
    }
    return added;
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void cyg_record_write(unsigned char *p, const cyg_slot *s)
{
    memcpy(p, s->digest, CYG_TABLE_DIGEST);
    put_le(p + 16, s->pack_id, 8);
    put_le(p + 24, s->offset, 8);
    put_le(p + 32, s->length, 4);
    put_le(p + 36, s->slot, 4);
}

/* The slot field is returned whole in *slot so callers can reject values
 * that do not fit in 16 bits. */
void cyg_record_read(const unsigned char *p, cyg_slot *s, uint64_t *slot)
{
    memcpy(s->digest, p, CYG_TABLE_DIGEST);
    s->pack_id = get_le(p + 16, 8);
    s->offset = get_le(p + 24, 8);
    s->length = (uint32_t)get_le(p + 32, 4);
    *slot = get_le(p + 36, 4);
    s->slot = (uint16_t)*slot;
    s->used = 1;
}
