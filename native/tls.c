/* TlsContext and TlsSession: the TLS the endpoint ends itself, in OpenSSL.
 *
 * A client routed by `options=endpoint=` names its branch inside TLS, so the
 * endpoint must end the client's TLS, and opens its own to the branch. Python
 * drives the handshakes and reads the StartupMessage through a TlsSession (on
 * a non-blocking socket it does not own: asyncio waits for readiness); once
 * routed, relay_add_tls hands both sessions to the relay thread
 * (relay_core.c), which moves the bytes without Python and without the GIL. */
#include "cygnet_native.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "relay_core.h"

/* What a session call waits for: returned to Python, which waits on the socket. */
enum { TLS_DONE = 0, TLS_WANT_READ = 1, TLS_WANT_WRITE = 2 };

typedef struct {
    PyObject_HEAD
    SSL_CTX *server; /* toward clients: the host's certificate */
    SSL_CTX *client; /* toward branches: their certificate checked against the CA */
} TlsContext;

typedef struct {
    PyObject_HEAD
    SSL *ssl; /* NULL once handed to the relay */
} TlsSession;

static PyTypeObject *session_type;

/* OSError(EPROTO, "TLS: <what>: <what OpenSSL said>"), or `otherwise` when it said
 * nothing; the error queue emptied. */
static PyObject *tls_failed(const char *what, const char *otherwise)
{
    char reason[256];
    snprintf(reason, sizeof reason, "%s", otherwise);
    unsigned long code = ERR_get_error();
    if (code != 0)
        ERR_error_string_n(code, reason, sizeof reason);
    ERR_clear_error();
    PyObject *exc = PyUnicode_FromFormat("TLS: %s: %s", what, reason);
    if (exc != NULL) {
        PyObject *err = PyObject_CallFunction(PyExc_OSError, "(iO)", EPROTO, exc);
        if (err != NULL) {
            PyErr_SetObject(PyExc_OSError, err);
            Py_DECREF(err);
        }
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *tls_error(const char *what) { return tls_failed(what, "no detail"); }

/* The client's ALPN list names "postgresql" (PostgreSQL 17's direct TLS asks for
 * it): that is chosen; a client offering others only gets no ALPN. */
static int choose_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char ours[] = "\x0apostgresql";
    unsigned char *chosen = NULL;
    if (SSL_select_next_proto(&chosen, outlen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

/* What both directions share: TLS 1.2 at least, a read takes what the socket
 * holds at once, writes may be partial (the relay keeps its buffer), and a peer
 * closing without close_notify is an end of file, not an error. */
static int tune(SSL_CTX *ctx)
{
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    return SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}

static PyObject *context_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"cert", "key", "ca", NULL};
    PyObject *cert_arg, *key_arg, *ca_arg = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&|O:TlsContext", keywords,
                                     PyUnicode_FSConverter, &cert_arg, PyUnicode_FSConverter,
                                     &key_arg, &ca_arg))
        return NULL;
    PyObject *ca_bytes = NULL;
    TlsContext *self = NULL;
    if (ca_arg != Py_None && !PyUnicode_FSConverter(ca_arg, &ca_bytes))
        goto done;
    self = (TlsContext *)type->tp_alloc(type, 0);
    if (self == NULL)
        goto done;
    const char *cert = PyBytes_AS_STRING(cert_arg), *key = PyBytes_AS_STRING(key_arg);
    self->server = SSL_CTX_new(TLS_server_method());
    self->client = SSL_CTX_new(TLS_client_method());
    if (self->server == NULL || self->client == NULL || !tune(self->server) ||
        !tune(self->client)) {
        tls_error("cannot make a context");
        goto fail;
    }
    SSL_CTX_set_num_tickets(self->server, 0); /* no resumption: nothing to keep */
    SSL_CTX_set_alpn_select_cb(self->server, choose_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(self->server, cert) != 1) {
        tls_error("the certificate cannot be loaded");
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(self->server, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(self->server) != 1) {
        tls_error("the key cannot be loaded");
        goto fail;
    }
    if (ca_bytes != NULL) {
        if (SSL_CTX_load_verify_locations(self->client, PyBytes_AS_STRING(ca_bytes), NULL) != 1) {
            tls_error("the CA cannot be loaded");
            goto fail;
        }
        SSL_CTX_set_verify(self->client, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(self->client, SSL_VERIFY_NONE, NULL);
    }
    goto done;
fail:
    Py_CLEAR(self);
done:
    Py_DECREF(cert_arg);
    Py_DECREF(key_arg);
    Py_XDECREF(ca_bytes);
    return (PyObject *)self;
}

static void context_dealloc(TlsContext *self)
{
    PyTypeObject *type = Py_TYPE(self);
    SSL_CTX_free(self->server);
    SSL_CTX_free(self->client);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *new_session(TlsContext *self, PyObject *arg, int server)
{
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    TlsSession *session = PyObject_New(TlsSession, session_type);
    if (session == NULL)
        return NULL;
    session->ssl = SSL_new(server ? self->server : self->client);
    if (session->ssl == NULL || SSL_set_fd(session->ssl, fd) != 1) {
        Py_DECREF(session);
        return tls_error("cannot make a session");
    }
    if (server)
        SSL_set_accept_state(session->ssl);
    else
        SSL_set_connect_state(session->ssl);
    return (PyObject *)session;
}

static PyObject *context_accept(TlsContext *self, PyObject *fd) { return new_session(self, fd, 1); }

static PyObject *context_connect(TlsContext *self, PyObject *fd)
{
    return new_session(self, fd, 0);
}

static void session_dealloc(TlsSession *self)
{
    PyTypeObject *type = Py_TYPE(self);
    SSL_free(self->ssl);
    PyObject_Free(self);
    Py_DECREF(type);
}

static SSL *live(TlsSession *self)
{
    if (self->ssl == NULL)
        PyErr_SetString(PyExc_ValueError, "the TLS session was handed to the relay");
    return self->ssl;
}

/* TLS_WANT_* for a call that must wait, -1 with an exception for a failure. */
static int stopped(SSL *ssl, int ret, const char *what)
{
    switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        ERR_clear_error();
        return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        ERR_clear_error();
        return TLS_WANT_WRITE;
    case SSL_ERROR_SYSCALL:
        if (errno != 0) {
            ERR_clear_error();
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        /* no errno: the peer closed */
        /* fall through */
    case SSL_ERROR_ZERO_RETURN: /* an end without close_notify too (IGNORE_UNEXPECTED_EOF) */
        tls_failed(what, "the peer closed the connection");
        return -1;
    default:
        break;
    }
    tls_error(what);
    return -1;
}

static PyObject *session_handshake(TlsSession *self, PyObject *unused)
{
    (void)unused;
    SSL *ssl = live(self);
    if (ssl == NULL)
        return NULL;
    int ret;
    errno = 0;
    Py_BEGIN_ALLOW_THREADS
    ret = SSL_do_handshake(ssl);
    Py_END_ALLOW_THREADS
    if (ret == 1)
        return PyLong_FromLong(TLS_DONE);
    int want = stopped(ssl, ret, "handshake failed");
    return want < 0 ? NULL : PyLong_FromLong(want);
}

static PyObject *session_recv(TlsSession *self, PyObject *arg)
{
    SSL *ssl = live(self);
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (ssl == NULL || (n < 0 && PyErr_Occurred()))
        return NULL;
    if (n <= 0 || n > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "recv takes 1 to 1 MiB");
        return NULL;
    }
    PyObject *buf = PyBytes_FromStringAndSize(NULL, n);
    if (buf == NULL)
        return NULL;
    size_t got = 0;
    errno = 0;
    int ret = SSL_read_ex(ssl, PyBytes_AS_STRING(buf), (size_t)n, &got);
    int want = TLS_DONE;
    if (ret != 1) {
        if (SSL_get_error(ssl, ret) == SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            got = 0; /* end of file */
        } else if ((want = stopped(ssl, ret, "read failed")) < 0) {
            Py_DECREF(buf);
            return NULL;
        }
    }
    if (_PyBytes_Resize(&buf, (Py_ssize_t)got) < 0)
        return NULL;
    return Py_BuildValue("(iN)", want, buf);
}

static PyObject *session_send(TlsSession *self, PyObject *arg)
{
    SSL *ssl = live(self);
    Py_buffer view;
    if (ssl == NULL || PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    size_t put = 0;
    errno = 0;
    int ret = view.len > 0 ? SSL_write_ex(ssl, view.buf, (size_t)view.len, &put) : 1;
    PyBuffer_Release(&view);
    int want = ret == 1 ? TLS_DONE : stopped(ssl, ret, "write failed");
    if (want < 0)
        return NULL;
    return Py_BuildValue("(in)", want, (Py_ssize_t)put);
}

static PyObject *session_close_notify(TlsSession *self, PyObject *unused)
{
    (void)unused;
    if (self->ssl != NULL) {
        SSL_shutdown(self->ssl); /* best effort: the socket closes next */
        ERR_clear_error();
    }
    Py_RETURN_NONE;
}

static PyObject *relay_add_tls(PyObject *module, PyObject *args)
{
    (void)module;
    int client_fd, server_fd;
    PyObject *client_obj, *server_obj;
    if (!PyArg_ParseTuple(args, "iO!iO!:relay_add_tls", &client_fd, session_type, &client_obj,
                          &server_fd, session_type, &server_obj))
        return NULL;
    TlsSession *client = (TlsSession *)client_obj, *server = (TlsSession *)server_obj;
    if (client == server || live(client) == NULL || live(server) == NULL)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "two sessions needed");
    if (client_fd < 0 || server_fd < 0 || client_fd == server_fd ||
        SSL_get_fd(client->ssl) != client_fd || SSL_get_fd(server->ssl) != server_fd) {
        PyErr_SetString(PyExc_ValueError, "relay_add_tls needs each session's own descriptor");
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cyg_relay_add(client_fd, client->ssl, server_fd, server->ssl);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    client->ssl = server->ssl = NULL; /* the relay frees them with the pair */
    Py_RETURN_NONE;
}

static PyMethodDef context_methods[] = {
    {"accept", (PyCFunction)context_accept, METH_O,
     "accept(sock) -> TlsSession\n\nThe server side of TLS on a client's socket (its descriptor "
     "is borrowed, not owned)."},
    {"connect", (PyCFunction)context_connect, METH_O,
     "connect(sock) -> TlsSession\n\nThe client side of TLS toward a branch."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef session_methods[] = {
    {"handshake", (PyCFunction)session_handshake, METH_NOARGS,
     "handshake() -> int\n\n0 when done, 1 or 2 when it waits for the socket to be readable "
     "or writable."},
    {"recv", (PyCFunction)session_recv, METH_O,
     "recv(n) -> (want, bytes)\n\nUp to n decrypted bytes (b'' at end of file) with want 0, or "
     "b'' with want 1 or 2."},
    {"send", (PyCFunction)session_send, METH_O,
     "send(data) -> (want, n)\n\nHow many bytes were taken, with want 0, or 0 with want 1 or 2 "
     "(call again with the same bytes)."},
    {"close_notify", (PyCFunction)session_close_notify, METH_NOARGS,
     "close_notify()\n\nTells the peer TLS ends (best effort)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot context_slots[] = {
    {Py_tp_doc, "TlsContext(cert, key, ca=None)\n\nThe endpoint's TLS: its certificate for "
                "clients, and the CA that branches' certificates are checked against."},
    {Py_tp_new, context_new},
    {Py_tp_dealloc, context_dealloc},
    {Py_tp_methods, context_methods},
    {0, NULL},
};

static PyType_Slot session_slots[] = {
    {Py_tp_doc, "One TLS connection, driven by the caller until handed to the relay."},
    {Py_tp_dealloc, session_dealloc},
    {Py_tp_methods, session_methods},
    {0, NULL},
};

static PyType_Spec context_spec = {
    .name = "cygnet._native.TlsContext",
    .basicsize = sizeof(TlsContext),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = context_slots,
};

static PyType_Spec session_spec = {
    .name = "cygnet._native.TlsSession",
    .basicsize = sizeof(TlsSession),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = session_slots,
};

static PyMethodDef tls_functions[] = {
    {"relay_add_tls", relay_add_tls, METH_VARARGS,
     "relay_add_tls(client_fd, client_session, server_fd, server_session, /)\n--\n\n"
     "relay_add for two sockets whose TLS ends here: the relay thread reads and writes "
     "them through their sessions, which belong to it from then on, as do the descriptors."},
    {NULL, NULL, 0, NULL},
};

int cyg_tls_exec(PyObject *module)
{
    PyObject *context = PyType_FromModuleAndSpec(module, &context_spec, NULL);
    if (context == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, "TlsContext", context);
    Py_DECREF(context);
    if (rc < 0)
        return -1;
    PyObject *session = PyType_FromModuleAndSpec(module, &session_spec, NULL);
    if (session == NULL)
        return -1;
    rc = PyModule_AddObjectRef(module, "TlsSession", session);
    session_type = (PyTypeObject *)session; /* the module holds it for the process's life */
    Py_DECREF(session);
    if (rc < 0)
        return -1;
    return PyModule_AddFunctions(module, tls_functions);
}
