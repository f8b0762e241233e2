/* relay_add / relay_stats: Python face of the endpoint's relay (relay_core.c). */
#include "cygnet_native.h"

#include "relay_core.h"

static PyObject *relay_add(PyObject *self, PyObject *args)
{
    (void)self;
    int client_fd, server_fd;
    if (!PyArg_ParseTuple(args, "ii:relay_add", &client_fd, &server_fd))
        return NULL;
    if (client_fd < 0 || server_fd < 0 || client_fd == server_fd) {
        PyErr_SetString(PyExc_ValueError, "relay_add needs two distinct open descriptors");
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cyg_relay_add(client_fd, NULL, server_fd, NULL);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *relay_stats(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    struct cyg_relay_stats st;
    cyg_relay_stats(&st);
    return Py_BuildValue("(KKKK)", (unsigned long long)st.active, (unsigned long long)st.total,
                         (unsigned long long)st.up, (unsigned long long)st.down);
}

static PyObject *relay_tls_active(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    struct cyg_relay_stats st;
    cyg_relay_stats(&st);
    return PyLong_FromUnsignedLongLong(st.tls);
}

PyMethodDef cyg_relay_methods[] = {
    {"relay_add", relay_add, METH_VARARGS,
     "relay_add(client_fd, server_fd, /)\n--\n\n"
     "Hands two connected non-blocking sockets to the relay thread, which moves "
     "bytes both ways without the GIL and closes both when the connection ends. "
     "The descriptors belong to the relay from then on (detach them in Python)."},
    {"relay_stats", relay_stats, METH_NOARGS,
     "relay_stats()\n--\n\n"
     "(active, total, bytes client->server, bytes server->client) of the relay."},
    {"relay_tls_active", relay_tls_active, METH_NOARGS,
     "relay_tls_active()\n--\n\n"
     "How many of the pairs relayed now have TLS ended here (relay_add_tls)."},
    {NULL, NULL, 0, NULL},
};
