/* The hash table behind DedupIndex (dedup_table.c), without Python: the C
 * tests drive it directly. */
#ifndef CYGNET_DEDUP_TABLE_H
#define CYGNET_DEDUP_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define CYG_TABLE_DIGEST 16
/* digest[16] | pack_id u64 | offset u64 | length u32 | slot u32, little-endian. */
#define CYG_RECORD_SIZE 40

typedef struct {
    unsigned char digest[CYG_TABLE_DIGEST];
    uint64_t pack_id;
    uint64_t offset;
    uint32_t length;
    uint16_t slot;
    uint16_t used;
} cyg_slot;

typedef struct {
    cyg_slot *slots;
    size_t mask; /* capacity - 1, or 0 while slots == NULL */
    size_t count;
} cyg_table;

/* Makes room for `extra` more entries; 0, or -1 when out of memory (the
 * table is then unchanged). */
int cyg_table_reserve(cyg_table *t, size_t extra);
/* 1 if inserted, 0 if present (the first location wins), -1 out of memory. */
int cyg_table_insert(cyg_table *t, const unsigned char *digest, uint64_t pack_id,
                     uint64_t offset, uint32_t length, uint16_t slot);
cyg_slot *cyg_table_lookup(const cyg_table *t, const unsigned char *digest);
void cyg_table_remove(cyg_table *t, cyg_slot *s);
void cyg_table_free(cyg_table *t);

/* Inserts block k of a frame (digests + 16k, slot k) unless present and
 * writes the new entries' records to `records` (room for n); returns how
 * many, or -1 when out of memory, in which case nothing was inserted. */
long cyg_table_insert_frame(cyg_table *t, const unsigned char *digests, size_t n,
                            uint64_t pack_id, uint64_t offset, uint32_t length,
                            unsigned char *records);

void cyg_record_write(unsigned char *p, const cyg_slot *s);
void cyg_record_read(const unsigned char *p, cyg_slot *s, uint64_t *slot);

#ifdef CYG_TEST_HOOKS
/* Test builds only: the table allocation after this many succeeds fails
 * (-1: never). */
extern long cyg_table_allocs_left;
#endif

#endif
