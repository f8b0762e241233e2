/* spawn_detached: Python face of cyg_spawn_detached (spawn_core.c).
 *
 * cygnetd starts every postmaster this way so that no daemon restart, not even
 * kill -9, stops a database. Doing it in C costs one exec, where a Python
 * launcher costs an interpreter start on every branch. */
#include "cygnet_native.h"

#include <string.h>

#include "spawn_core.h"

/* A NULL-terminated char* array of a list of str/bytes; `keep` owns the bytes. */
static char **to_cstrings(PyObject *list, const char *what, PyObject **keep)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    char **out = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    *keep = PyList_New(n);
    if (out == NULL || *keep == NULL) {
        PyMem_Free(out);
        Py_CLEAR(*keep);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *bytes = NULL;
        if (!PyUnicode_FSConverter(PyList_GET_ITEM(list, i), &bytes)) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] must be str or bytes without NUL", what, i);
            PyMem_Free(out);
            Py_CLEAR(*keep);
            return NULL;
        }
        PyList_SET_ITEM(*keep, i, bytes);
        out[i] = PyBytes_AS_STRING(bytes);
    }
    return out;
}

/* pass_fds as a C array of descriptors >= 3 (0-2 are the program's stdio). */
static int *to_fds(PyObject *seq, Py_ssize_t *n)
{
    PyObject *fast = PySequence_Fast(seq, "pass_fds must be a sequence of int");
    if (fast == NULL)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(fast);
    int *fds = PyMem_Calloc((size_t)*n + 1, sizeof(int));
    if (fds == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (fd == -1 && PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "pass_fds[%zd] must be an int", i);
            break;
        }
        if (fd < 3 || fd > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "pass_fds[%zd]: %ld is not a descriptor >= 3", i, fd);
            break;
        }
        fds[i] = (int)fd;
    }
    Py_DECREF(fast);
    if (PyErr_Occurred()) {
        PyMem_Free(fds);
        return NULL;
    }
    return fds;
}

/* OSError(errno, "<step>: <strerror>", argv[0]); a subclass by errno. */
static PyObject *spawn_error(const cyg_spawn_report *r, const char *program, const char *cwd)
{
    PyObject *msg = r->step == CYG_SPAWN_CHDIR
                        ? PyUnicode_FromFormat("chdir to %s: %s", cwd, strerror(r->err))
                        : PyUnicode_FromFormat("%s: %s", cyg_spawn_step_name(r->step),
                                               strerror(r->err));
    PyObject *name = PyUnicode_DecodeFSDefault(program);
    if (msg != NULL && name != NULL) {
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iOO", r->err, msg, name);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
    }
    Py_XDECREF(msg);
    Py_XDECREF(name);
    return NULL;
}

/* The argument lists as C arrays; 0, or -1 with an exception set. */
static int prepare(PyObject *argv_list, PyObject *env_list, PyObject *pass_fds,
                   cyg_spawn_request *req, PyObject **keep)
{
    Py_ssize_t n_fds = 0;
    req->argv = to_cstrings(argv_list, "argv", &keep[0]);
    if (req->argv == NULL)
        return -1;
    req->envp = to_cstrings(env_list, "env", &keep[1]);
    if (req->envp == NULL)
        return -1;
    if (pass_fds != NULL) {
        req->keep_fds = to_fds(pass_fds, &n_fds);
        if (req->keep_fds == NULL)
            return -1;
    }
    req->n_keep = (size_t)n_fds;
    return 0;
}

static PyObject *spawn_detached(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"", "", "", "", "", "", "pass_fds", NULL};
    PyObject *argv_list, *env_list, *pass_fds = NULL, *keep[2] = {NULL, NULL};
    unsigned int uid, gid;
    cyg_spawn_request req = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!IIis|O:spawn_detached", kwlist,
                                     &PyList_Type, &argv_list, &PyList_Type, &env_list, &uid,
                                     &gid, &req.log_fd, &req.cwd, &pass_fds))
        return NULL;
    if (PyList_GET_SIZE(argv_list) == 0)
        return PyErr_Format(PyExc_ValueError, "argv must not be empty");
    if (req.log_fd < 0)
        return PyErr_Format(PyExc_ValueError, "log_fd: %d is not a descriptor", req.log_fd);
    req.uid = (uid_t)uid;
    req.gid = (gid_t)gid;
    PyObject *result = NULL;
    if (prepare(argv_list, env_list, pass_fds, &req, keep) == 0) {
        cyg_spawn_report report;
        pid_t pid;
        Py_BEGIN_ALLOW_THREADS
        pid = cyg_spawn_detached(&req, &report);
        Py_END_ALLOW_THREADS
        result = pid > 0 ? PyLong_FromLong((long)pid)
                         : spawn_error(&report, req.argv[0], req.cwd);
    }
    PyMem_Free((void *)req.argv);
    PyMem_Free((void *)req.envp);
    PyMem_Free((void *)req.keep_fds);
    Py_XDECREF(keep[0]);
    Py_XDECREF(keep[1]);
    return result;
}

PyMethodDef cyg_spawn_methods[] = {
    {"spawn_detached", (PyCFunction)(void (*)(void))spawn_detached,
     METH_VARARGS | METH_KEYWORDS,
     "spawn_detached(argv, env, uid, gid, log_fd, cwd, pass_fds=()) -> int\n\n"
     "Starts argv[0] (an absolute path) as uid/gid in a new session, as a grandchild "
     "(so PID 1 becomes its parent), stdin /dev/null, stdout and stderr on log_fd, "
     "and no other descriptor but pass_fds; returns its pid once it has exec'd. "
     "Raises OSError naming the program and the failed step otherwise."},
    {NULL, NULL, 0, NULL},
};
