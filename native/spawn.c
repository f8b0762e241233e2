/* spawn_detached: start a program as another user, in its own session, with
 * PID 1 as its parent (a double fork), and return its pid.
 *
 * cygnetd starts every postmaster this way so that no daemon restart, not even
 * kill -9, stops a database. Doing it in C costs a fork and an exec, where a
 * Python launcher costs an interpreter start on every branch. Between fork and
 * exec the children call only async-signal-safe functions, as they must in a
 * process with other threads (gRPC's). */
#include "cygnet_native.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* Runs in the grandchild; never returns. */
static void become(char **argv, char **envp, uid_t uid, gid_t gid, int log_fd, const char *cwd)
{
    /* Leader of a session of its own: no signal sent to the daemon's session
     * or process group (a terminal's Ctrl-C, a service manager) reaches it. */
    setsid();
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
        _exit(126);
    /* Python ignores these; the program gets the defaults, as with subprocess. */
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        _exit(126);
    if (chdir(cwd) != 0)
        _exit(126);
    umask(077);
    execve(argv[0], argv, envp);
    _exit(127);
}

static pid_t fork_detached(char **argv, char **envp, uid_t uid, gid_t gid, int log_fd,
                           const char *cwd, int *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        *err = errno;
        return -1;
    }
    pid_t child = fork();
    if (child == 0) {
        close(fds[0]);
        pid_t grandchild = fork();
        if (grandchild == 0)
            become(argv, envp, uid, gid, log_fd, cwd);
        ssize_t w = write(fds[1], &grandchild, sizeof grandchild);
        _exit(grandchild > 0 && w == (ssize_t)sizeof grandchild ? 0 : 1);
    }
    close(fds[1]);
    if (child < 0) {
        *err = errno;
        close(fds[0]);
        return -1;
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    pid_t grandchild = -1;
    ssize_t r = read(fds[0], &grandchild, sizeof grandchild);
    close(fds[0]);
    if (r != (ssize_t)sizeof grandchild || grandchild <= 0) {
        *err = ECHILD;
        return -1;
    }
    return grandchild;
}

static PyObject *spawn_detached(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *argv_list, *env_list, *argv_keep = NULL, *env_keep = NULL;
    unsigned int uid, gid;
    int log_fd;
    const char *cwd;
    if (!PyArg_ParseTuple(args, "O!O!IIis:spawn_detached", &PyList_Type, &argv_list,
                          &PyList_Type, &env_list, &uid, &gid, &log_fd, &cwd))
        return NULL;
    if (PyList_GET_SIZE(argv_list) == 0)
        return PyErr_Format(PyExc_ValueError, "argv must not be empty");
    char **argv = to_cstrings(argv_list, "argv", &argv_keep);
    if (argv == NULL)
        return NULL;
    char **envp = to_cstrings(env_list, "env", &env_keep);
    if (envp == NULL) {
        PyMem_Free(argv);
        Py_DECREF(argv_keep);
        return NULL;
    }
    int err = 0;
    pid_t pid;
    Py_BEGIN_ALLOW_THREADS
    pid = fork_detached(argv, envp, (uid_t)uid, (gid_t)gid, log_fd, cwd, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(argv);
    PyMem_Free(envp);
    Py_DECREF(argv_keep);
    Py_DECREF(env_keep);
    if (pid < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong((long)pid);
}

PyMethodDef cyg_spawn_methods[] = {
    {"spawn_detached", spawn_detached, METH_VARARGS,
     "spawn_detached(argv, env, uid, gid, log_fd, cwd) -> int\n\n"
     "Starts argv[0] (an absolute path) as uid/gid in a new session, as a grandchild "
     "(so PID 1 becomes its parent), stdin /dev/null, stdout and stderr on log_fd; "
     "returns its pid. Exit status 126/127 in the log means setup/exec failed."},
    {NULL, NULL, 0, NULL},
};
