/* DedupIndex: 16-byte block digest -> (pack_id, offset, length, slot).
 *
 * A location names a zstd frame in a pack and the block's place in it: a
 * frame holds one block (slot 0) or a group of whole blocks compressed
 * together.
 *
 * Open addressing with linear probing over a power-of-two table. Real
 * digests are uniform already, but the home slot mixes all 16 bytes anyway
 * so that structured keys (tests, crafted data) cannot pile into one run. Removal uses backward-shift deletion (no tombstones). The table
 * serialises to fixed 40-byte little-endian records:
 *   digest[16] | pack_id u64 | offset u64 | length u32 | slot u32.
 * Slots are below 65536 (they are kept in 16 bits to keep a slot at 40 bytes). */
#include "cygnet_native.h"

#include <stdint.h>
#include <string.h>

#define RECORD_SIZE 40
#define MIN_CAPACITY 16

typedef struct {
    unsigned char digest[CYG_DIGEST_SIZE];
    uint64_t pack_id;
    uint64_t offset;
    uint32_t length;
    uint16_t slot;
    uint16_t used;
} slot_t;

typedef struct {
    PyObject_HEAD
    slot_t *slots;
    size_t mask; /* capacity - 1, or 0 while slots == NULL */
    size_t count;
} DedupIndex;

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
static slot_t *find_slot(const DedupIndex *self, const unsigned char *digest)
{
    size_t i = home_of(digest, self->mask);
    for (;;) {
        slot_t *s = &self->slots[i];
        if (!s->used || memcmp(s->digest, digest, CYG_DIGEST_SIZE) == 0)
            return s;
        i = (i + 1) & self->mask;
    }
}

static slot_t *lookup(const DedupIndex *self, const unsigned char *digest)
{
    if (self->slots == NULL)
        return NULL;
    slot_t *s = find_slot(self, digest);
    return s->used ? s : NULL;
}

static int resize(DedupIndex *self, size_t capacity)
{
    slot_t *slots = PyMem_Calloc(capacity, sizeof(slot_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    slot_t *old = self->slots;
    size_t old_cap = old ? self->mask + 1 : 0;
    self->slots = slots;
    self->mask = capacity - 1;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].used)
            *find_slot(self, old[i].digest) = old[i];
    PyMem_Free(old);
    return 0;
}

/* Keeps the load factor at or below 0.7 for one more entry. */
static int reserve_one(DedupIndex *self)
{
    size_t cap = self->slots ? self->mask + 1 : 0;
    if ((self->count + 1) * 10 <= cap * 7)
        return 0;
    size_t new_cap = cap ? cap : MIN_CAPACITY;
    while ((self->count + 1) * 10 > new_cap * 7) {
        if (new_cap > SIZE_MAX / 2 / sizeof(slot_t)) {
            PyErr_NoMemory();
            return -1;
        }
        new_cap *= 2;
    }
    return resize(self, new_cap);
}

/* Returns 1 if inserted, 0 if the digest was already present (the first
 * location wins), -1 on error. */
static int insert(DedupIndex *self, const unsigned char *digest, uint64_t pack_id,
                  uint64_t offset, uint32_t length, uint16_t slot)
{
    if (reserve_one(self) < 0)
        return -1;
    slot_t *s = find_slot(self, digest);
    if (s->used)
        return 0;
    memcpy(s->digest, digest, CYG_DIGEST_SIZE);
    s->pack_id = pack_id;
    s->offset = offset;
    s->length = length;
    s->slot = slot;
    s->used = 1;
    self->count++;
    return 1;
}

/* Backward-shift deletion: pull later entries of the probe run into the
 * hole unless their home slot lies cyclically in (hole, j]. */
static void remove_slot(DedupIndex *self, size_t hole)
{
    size_t j = hole;
    for (;;) {
        j = (j + 1) & self->mask;
        if (!self->slots[j].used)
            break;
        size_t k = home_of(self->slots[j].digest, self->mask);
        int stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
        if (stays)
            continue;
        self->slots[hole] = self->slots[j];
        hole = j;
    }
    memset(&self->slots[hole], 0, sizeof(slot_t));
    self->count--;
}

/* ---- Python glue ---------------------------------------------------- */

static int parse_digest(PyObject *obj, unsigned char out[CYG_DIGEST_SIZE])
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return -1;
    int ok = view.len == CYG_DIGEST_SIZE;
    if (ok)
        memcpy(out, view.buf, CYG_DIGEST_SIZE);
    else
        PyErr_Format(PyExc_ValueError, "digest must be %d bytes, got %zd", CYG_DIGEST_SIZE,
                     view.len);
    PyBuffer_Release(&view);
    return ok ? 0 : -1;
}

static PyObject *index_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"capacity", NULL};
    Py_ssize_t capacity = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n:DedupIndex", kwlist, &capacity))
        return NULL;
    if (capacity < 0) {
        PyErr_SetString(PyExc_ValueError, "capacity must be >= 0");
        return NULL;
    }
    DedupIndex *self = (DedupIndex *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    size_t cap = MIN_CAPACITY;
    while ((size_t)capacity * 10 > cap * 7 && cap < ((size_t)1 << 40))
        cap *= 2;
    if (capacity > 0 && resize(self, cap) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void index_dealloc(DedupIndex *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyMem_Free(self->slots);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static Py_ssize_t index_len(DedupIndex *self) { return (Py_ssize_t)self->count; }

static int index_contains(DedupIndex *self, PyObject *key)
{
    unsigned char digest[CYG_DIGEST_SIZE];
    if (parse_digest(key, digest) < 0)
        return -1;
    return lookup(self, digest) != NULL;
}

static PyObject *index_get(DedupIndex *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(digest, default=None)");
        return NULL;
    }
    unsigned char digest[CYG_DIGEST_SIZE];
    if (parse_digest(args[0], digest) < 0)
        return NULL;
    slot_t *s = lookup(self, digest);
    if (s == NULL)
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return Py_BuildValue("(KKII)", (unsigned long long)s->pack_id,
                         (unsigned long long)s->offset, (unsigned int)s->length,
                         (unsigned int)s->slot);
}

static int parse_u64(PyObject *obj, uint64_t max, const char *name, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (v > max) {
        PyErr_Format(PyExc_OverflowError, "%s out of range", name);
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *index_insert(DedupIndex *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "insert(digest, pack_id, offset, length, slot=0)");
        return NULL;
    }
    unsigned char digest[CYG_DIGEST_SIZE];
    uint64_t pack_id, offset, length, slot = 0;
    if (parse_digest(args[0], digest) < 0 || parse_u64(args[1], UINT64_MAX, "pack_id", &pack_id) < 0 ||
        parse_u64(args[2], UINT64_MAX, "offset", &offset) < 0 ||
        parse_u64(args[3], UINT32_MAX, "length", &length) < 0 ||
        (nargs == 5 && parse_u64(args[4], UINT16_MAX, "slot", &slot) < 0))
        return NULL;
    int r = insert(self, digest, pack_id, offset, (uint32_t)length, (uint16_t)slot);
    return r < 0 ? NULL : PyBool_FromLong(r);
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

/* insert_frame(digests, pack_id, offset, length) -> bytes: block k of a frame
 * has digests[16k:16k+16] and slot k. Inserts the absent ones and returns
 * their records; a digest already present (stored elsewhere, or earlier in
 * this frame) gets none. One call per frame instead of one per block. */
static PyObject *index_insert_frame(DedupIndex *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "insert_frame(digests, pack_id, offset, length)");
        return NULL;
    }
    uint64_t pack_id, offset, length;
    if (parse_u64(args[1], UINT64_MAX, "pack_id", &pack_id) < 0 ||
        parse_u64(args[2], UINT64_MAX, "offset", &offset) < 0 ||
        parse_u64(args[3], UINT32_MAX, "length", &length) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = view.len / CYG_DIGEST_SIZE;
    if (view.len % CYG_DIGEST_SIZE != 0 || n > UINT16_MAX + 1) {
        PyErr_Format(PyExc_ValueError, "digests: length %zd is not 16 bytes per block of a frame",
                     view.len);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, n * RECORD_SIZE);
    if (out == NULL)
        goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *d = view.buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        int r = insert(self, d + k * CYG_DIGEST_SIZE, pack_id, offset, (uint32_t)length,
                       (uint16_t)k);
        if (r < 0) {
            Py_CLEAR(out);
            goto done;
        }
        if (r == 0)
            continue;
        memcpy(p, d + k * CYG_DIGEST_SIZE, CYG_DIGEST_SIZE);
        put_le(p + 16, pack_id, 8);
        put_le(p + 24, offset, 8);
        put_le(p + 32, length, 4);
        put_le(p + 36, (uint64_t)k, 4);
        p += RECORD_SIZE;
    }
    (void)_PyBytes_Resize(&out, p - (unsigned char *)PyBytes_AS_STRING(out)); /* NULL on error */
done:
    PyBuffer_Release(&view);
    return out;
}

static PyObject *index_remove(DedupIndex *self, PyObject *key)
{
    unsigned char digest[CYG_DIGEST_SIZE];
    if (parse_digest(key, digest) < 0)
        return NULL;
    slot_t *s = lookup(self, digest);
    if (s != NULL)
        remove_slot(self, (size_t)(s - self->slots));
    return PyBool_FromLong(s != NULL);
}

static PyObject *index_missing(DedupIndex *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *list = NULL;
    if (view.len % CYG_DIGEST_SIZE != 0) {
        PyErr_Format(PyExc_ValueError, "digest array length %zd is not a multiple of %d", view.len,
                     CYG_DIGEST_SIZE);
        goto done;
    }
    list = PyList_New(0);
    const unsigned char *d = view.buf;
    for (Py_ssize_t i = 0; list != NULL && i < view.len / CYG_DIGEST_SIZE; i++) {
        if (lookup(self, d + i * CYG_DIGEST_SIZE) != NULL)
            continue;
        PyObject *idx = PyLong_FromSsize_t(i);
        if (idx == NULL || PyList_Append(list, idx) < 0)
            Py_CLEAR(list);
        Py_XDECREF(idx);
    }
done:
    PyBuffer_Release(&view);
    return list;
}

static PyObject *index_to_bytes(DedupIndex *self, PyObject *Py_UNUSED(ignored))
{
    if (self->count > (size_t)PY_SSIZE_T_MAX / RECORD_SIZE)
        return PyErr_NoMemory();
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(self->count * RECORD_SIZE));
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    size_t cap = self->slots ? self->mask + 1 : 0;
    for (size_t i = 0; i < cap; i++) {
        const slot_t *s = &self->slots[i];
        if (!s->used)
            continue;
        memcpy(p, s->digest, CYG_DIGEST_SIZE);
        put_le(p + 16, s->pack_id, 8);
        put_le(p + 24, s->offset, 8);
        put_le(p + 32, s->length, 4);
        put_le(p + 36, s->slot, 4);
        p += RECORD_SIZE;
    }
    return out;
}

/* Adds records; existing digests keep their location. Returns the number
 * of new entries. */
static PyObject *index_update(DedupIndex *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    if (view.len % RECORD_SIZE != 0) {
        PyErr_Format(PyExc_ValueError, "record data length %zd is not a multiple of %d", view.len,
                     RECORD_SIZE);
        goto done;
    }
    size_t added = 0;
    for (const unsigned char *p = view.buf, *end = p + view.len; p < end; p += RECORD_SIZE) {
        uint64_t slot = get_le(p + 36, 4);
        if (slot > UINT16_MAX) {
            PyErr_Format(PyExc_ValueError, "record %zd: slot %llu out of range",
                         (Py_ssize_t)((p - (const unsigned char *)view.buf) / RECORD_SIZE),
                         (unsigned long long)slot);
            goto done;
        }
        int r = insert(self, p, get_le(p + 16, 8), get_le(p + 24, 8), (uint32_t)get_le(p + 32, 4),
                       (uint16_t)slot);
        if (r < 0)
            goto done;
        added += (size_t)r;
    }
    result = PyLong_FromSize_t(added);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *index_from_bytes(PyObject *cls, PyObject *arg)
{
    PyObject *self = PyObject_CallNoArgs(cls);
    if (self == NULL)
        return NULL;
    PyObject *r = index_update((DedupIndex *)self, arg);
    if (r == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    Py_DECREF(r);
    return self;
}

static PyMethodDef index_methods[] = {
    {"get", (PyCFunction)(void (*)(void))index_get, METH_FASTCALL,
     "get(digest, default=None) -> (pack_id, offset, length, slot) or default"},
    {"insert", (PyCFunction)(void (*)(void))index_insert, METH_FASTCALL,
     "insert(digest, pack_id, offset, length, slot=0) -> bool\n\nAdds the digest if absent "
     "(an existing location is kept); returns whether it was new."},
    {"insert_frame", (PyCFunction)(void (*)(void))index_insert_frame, METH_FASTCALL,
     "insert_frame(digests, pack_id, offset, length) -> bytes\n\nInserts block k of a frame "
     "(digest k of the array, slot k) unless present; returns the new entries' records."},
    {"remove", (PyCFunction)index_remove, METH_O, "remove(digest) -> bool"},
    {"missing", (PyCFunction)index_missing, METH_O,
     "missing(digests) -> list[int]\n\nIndexes of the digests of a digest array that are absent."},
    {"to_bytes", (PyCFunction)index_to_bytes, METH_NOARGS,
     "to_bytes() -> bytes\n\nAll entries as 40-byte little-endian records."},
    {"update", (PyCFunction)index_update, METH_O,
     "update(records) -> int\n\nAdds records (as from to_bytes); returns how many were new."},
    {"from_bytes", (PyCFunction)index_from_bytes, METH_O | METH_CLASS,
     "from_bytes(records) -> DedupIndex"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot index_slots[] = {
    {Py_tp_doc, "DedupIndex(capacity=0)\n\nMaps 16-byte block digests to "
                "(pack_id, offset, length, slot) locations."},
    {Py_tp_new, index_new},
    {Py_tp_dealloc, index_dealloc},
    {Py_tp_methods, index_methods},
    {Py_sq_length, index_len},
    {Py_sq_contains, index_contains},
    {0, NULL},
};

PyType_Spec cyg_dedup_index_spec = {
    .name = "cygnet._native.DedupIndex",
    .basicsize = sizeof(DedupIndex),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = index_slots,
};
