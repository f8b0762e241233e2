/* DedupIndex: 16-byte block digest -> (pack_id, offset, length, slot).
 *
 * A location names a zstd frame in a pack and the block's place in it: a
 * frame holds one block (slot 0) or a group of whole blocks compressed
 * together. The table itself is in dedup_table.c. It serialises to fixed
 * 40-byte little-endian records:
 *   digest[16] | pack_id u64 | offset u64 | length u32 | slot u32.
 * Slots are below 65536 (they are kept in 16 bits to keep a slot at 40 bytes). */
#include "cygnet_native.h"

#include <stdint.h>
#include <string.h>

#include "dedup_table.h"

#define RECORD_SIZE CYG_RECORD_SIZE

_Static_assert(CYG_TABLE_DIGEST == CYG_DIGEST_SIZE, "one digest size");

typedef struct {
    PyObject_HEAD
    cyg_table table;
} DedupIndex;

static int insert(DedupIndex *self, const unsigned char *digest, uint64_t pack_id,
                  uint64_t offset, uint32_t length, uint16_t slot)
{
    int r = cyg_table_insert(&self->table, digest, pack_id, offset, length, slot);
    if (r < 0)
        PyErr_NoMemory();
    return r;
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
    if (cyg_table_reserve(&self->table, (size_t)capacity) < 0) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void index_dealloc(DedupIndex *self)
{
    PyTypeObject *type = Py_TYPE(self);
    cyg_table_free(&self->table);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static Py_ssize_t index_len(DedupIndex *self) { return (Py_ssize_t)self->table.count; }

static int index_contains(DedupIndex *self, PyObject *key)
{
    unsigned char digest[CYG_DIGEST_SIZE];
    if (parse_digest(key, digest) < 0)
        return -1;
    return cyg_table_lookup(&self->table, digest) != NULL;
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
    cyg_slot *s = cyg_table_lookup(&self->table, digest);
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
    long added = cyg_table_insert_frame(&self->table, view.buf, (size_t)n, pack_id, offset,
                                        (uint32_t)length, (unsigned char *)PyBytes_AS_STRING(out));
    if (added < 0) {
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    (void)_PyBytes_Resize(&out, (Py_ssize_t)added * RECORD_SIZE); /* NULL on error */
done:
    PyBuffer_Release(&view);
    return out;
}

static PyObject *index_remove(DedupIndex *self, PyObject *key)
{
    unsigned char digest[CYG_DIGEST_SIZE];
    if (parse_digest(key, digest) < 0)
        return NULL;
    cyg_slot *s = cyg_table_lookup(&self->table, digest);
    if (s != NULL)
        cyg_table_remove(&self->table, s);
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
        if (cyg_table_lookup(&self->table, d + i * CYG_DIGEST_SIZE) != NULL)
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
    const cyg_table *t = &self->table;
    if (t->count > (size_t)PY_SSIZE_T_MAX / RECORD_SIZE)
        return PyErr_NoMemory();
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(t->count * RECORD_SIZE));
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    size_t cap = t->slots ? t->mask + 1 : 0;
    for (size_t i = 0; i < cap; i++) {
        if (!t->slots[i].used)
            continue;
        cyg_record_write(p, &t->slots[i]);
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
    /* Checked and reserved first, so records are added all or none. */
    const unsigned char *start = view.buf, *end = start + view.len;
    size_t added = 0;
    cyg_slot rec;
    uint64_t slot;
    for (const unsigned char *p = start; p < end; p += RECORD_SIZE) {
        cyg_record_read(p, &rec, &slot);
        if (slot > UINT16_MAX) {
            PyErr_Format(PyExc_ValueError, "record %zd: slot %llu out of range",
                         (Py_ssize_t)((p - start) / RECORD_SIZE), (unsigned long long)slot);
            goto done;
        }
    }
    if (cyg_table_reserve(&self->table, (size_t)view.len / RECORD_SIZE) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    for (const unsigned char *p = start; p < end; p += RECORD_SIZE) {
        cyg_record_read(p, &rec, &slot);
        added += (size_t)insert(self, rec.digest, rec.pack_id, rec.offset, rec.length, rec.slot);
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
