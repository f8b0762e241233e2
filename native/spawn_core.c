/* cyg_spawn_detached: start a program as another user, in a session of its
 * own, with PID 1 as its parent (a double fork), and say why if it could not.
 *
 * Both children are made with clone(CLONE_VM | CLONE_VFORK), as posix_spawn
 * does: no page tables are copied, and no fork handler runs. A fork() in a
 * process with gRPC threads runs gRPC's pthread_atfork handlers, which crash
 * the child. Sharing the caller's memory means the children may only make
 * system calls: no malloc, no lock, no glibc setxid (which signals every
 * thread of the caller), so credentials change through raw syscalls.
 *
 * The parent is suspended until the grandchild has exec'd or died. Any
 * failure after the pipe exists is written to a close-on-exec pipe as a
 * (step, errno) pair, so the parent reads either that or end of file. */
#define _GNU_SOURCE
#include "spawn_core.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Each child runs a handful of syscalls; sanitizer builds need more room. */
#define CHILD_STACK (128u << 10)

typedef struct {
    const cyg_spawn_request *req;
    const int *keep; /* req->keep_fds plus the pipe, sorted */
    size_t n_keep;
    int pipe_w;
    sigset_t old_mask;
    char *grandchild_stack_top;
    pid_t grandchild; /* written by the middle child (shared memory) */
} spawn_job;

static const char *const step_names[] = {
    [CYG_SPAWN_OK] = "ok",
    [CYG_SPAWN_PIPE] = "pipe",
    [CYG_SPAWN_FORK] = "fork",
    [CYG_SPAWN_SETSID] = "setsid",
    [CYG_SPAWN_STDIO] = "stdio",
    [CYG_SPAWN_CLOSE_FDS] = "closing inherited descriptors",
    [CYG_SPAWN_KEEP_FDS] = "pass_fds",
    [CYG_SPAWN_SETGROUPS] = "setgroups",
    [CYG_SPAWN_SETGID] = "setgid",
    [CYG_SPAWN_SETUID] = "setuid",
    [CYG_SPAWN_CHDIR] = "chdir",
    [CYG_SPAWN_EXEC] = "exec",
    [CYG_SPAWN_LOST] = "start",
};

const char *cyg_spawn_step_name(int step)
{
    if (step < 0 || step > CYG_SPAWN_LOST)
        return "unknown step";
    return step_names[step];
}

/* ---- closing descriptors (async-signal-safe) ------------------------- */

static int is_kept(int fd, const int *keep, size_t n_keep)
{
    for (size_t i = 0; i < n_keep; i++)
        if (keep[i] == fd)
            return 1;
    return 0;
}

struct dirent64_raw {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static int parse_fd(const char *name)
{
    int fd = 0;
    if (*name == '\0')
        return -1;
    for (; *name; name++) {
        if (*name < '0' || *name > '9' || fd > (INT32_MAX - 9) / 10)
            return -1;
        fd = fd * 10 + (*name - '0');
    }
    return fd;
}

/* Closes what /proc/self/fd lists; -1 if it cannot be read. */
static int close_by_scan(int lo, const int *keep, size_t n_keep)
{
    int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    _Alignas(8) char buf[4096];
    long n;
    while ((n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            const struct dirent64_raw *d = (const struct dirent64_raw *)(buf + off);
            off += d->d_reclen;
            int fd = parse_fd(d->d_name);
            if (fd >= lo && fd != dir && !is_kept(fd, keep, n_keep))
                close(fd);
        }
    }
    close(dir);
    return n < 0 ? -1 : 0;
}

static int close_by_loop(int lo, const int *keep, size_t n_keep)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    int hi = rl.rlim_cur > INT32_MAX ? INT32_MAX : (int)rl.rlim_cur;
    for (int fd = lo; fd < hi; fd++)
        if (!is_kept(fd, keep, n_keep))
            close(fd);
    return 0;
}

/* close_range on every gap between kept descriptors; -1 with ENOSYS on an
 * old kernel. */
static int close_by_range(int lo, const int *keep, size_t n_keep)
{
#ifdef SYS_close_range
    unsigned int first = (unsigned int)lo;
    for (size_t i = 0; i <= n_keep; i++) {
        if (i < n_keep && keep[i] < lo)
            continue;
        unsigned int next = i < n_keep ? (unsigned int)keep[i] : ~0u;
        if (next > first && syscall(SYS_close_range, first, i < n_keep ? next - 1 : ~0u, 0) != 0)
            return -1;
        if (i < n_keep)
            first = next + 1;
    }
    return 0;
#else
    (void)lo, (void)keep, (void)n_keep;
    errno = ENOSYS;
    return -1;
#endif
}

int cyg_close_fds_except(int lo, const int *keep, size_t n_keep, int scan)
{
    if (!scan && close_by_range(lo, keep, n_keep) == 0)
        return 0;
    if (!scan && errno != ENOSYS && errno != EINVAL)
        return -1;
    if (close_by_scan(lo, keep, n_keep) == 0)
        return 0;
    return close_by_loop(lo, keep, n_keep);
}

/* ---- the children ----------------------------------------------------- */

static void report(int pipe_w, cyg_spawn_step step, int err)
{
    cyg_spawn_report r = {(int)step, err};
    /* Nothing to do if this fails: the parent then sees "lost". */
    ssize_t w = write(pipe_w, &r, sizeof r);
    (void)w;
}

/* Handlers are the caller's code in the caller's memory: none may run here.
 * Python ignores SIGPIPE and SIGXFSZ; the program gets the defaults. */
static void reset_signals(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) != 0 || sa.sa_handler == SIG_DFL)
            continue;
        if (sa.sa_handler == SIG_IGN && sig != SIGPIPE && sig != SIGXFSZ)
            continue;
        sa.sa_handler = SIG_DFL;
        sa.sa_flags = 0;
        sigemptyset(&sa.sa_mask);
        (void)sigaction(sig, &sa, NULL);
    }
}

/* dup2 clears close-on-exec; a descriptor already in place needs fcntl. */
static int place_fd(int fd, int target)
{
    if (fd == target)
        return fcntl(target, F_SETFD, 0);
    return dup2(fd, target) < 0 ? -1 : 0;
}

static int setup_stdio(int log_fd)
{
    if (place_fd(log_fd, 1) != 0 || place_fd(log_fd, 2) != 0)
        return -1;
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0)
        return -1;
    int rc = place_fd(null, 0);
    if (null != 0)
        close(null);
    return rc;
}

static cyg_spawn_step setup_fds(const spawn_job *job)
{
    if (setup_stdio(job->req->log_fd) != 0)
        return CYG_SPAWN_STDIO;
    if (cyg_close_fds_except(3, job->keep, job->n_keep, 0) != 0)
        return CYG_SPAWN_CLOSE_FDS;
    for (size_t i = 0; i < job->req->n_keep; i++) {
        int fd = job->req->keep_fds[i];
        if (fd == job->pipe_w) {
            errno = EBADF; /* it was not open when the pipe was made */
            return CYG_SPAWN_KEEP_FDS;
        }
        if (fcntl(fd, F_SETFD, 0) != 0)
            return CYG_SPAWN_KEEP_FDS;
    }
    return CYG_SPAWN_OK;
}

/* Raw syscalls: glibc's wrappers would signal the caller's threads. */
static cyg_spawn_step drop_privileges(const cyg_spawn_request *req)
{
    if (syscall(SYS_setgroups, 0, NULL) != 0)
        return CYG_SPAWN_SETGROUPS;
    if (syscall(SYS_setgid, req->gid) != 0)
        return CYG_SPAWN_SETGID;
    if (syscall(SYS_setuid, req->uid) != 0)
        return CYG_SPAWN_SETUID;
    return CYG_SPAWN_OK;
}

/* No ASan hooks on these two: they end in _exit on a stack of their own,
 * which ASan cannot unwind (it warns of false positives). */
#if defined(__has_attribute)
#if __has_attribute(no_sanitize_address)
#define CHILD_ENTRY __attribute__((no_sanitize_address))
#endif
#endif
#ifndef CHILD_ENTRY
#define CHILD_ENTRY
#endif

CHILD_ENTRY static int grandchild_main(void *arg)
{
    const spawn_job *job = arg;
    const cyg_spawn_request *req = job->req;
    cyg_spawn_step step = CYG_SPAWN_OK;
    reset_signals();
    /* Leader of a session of its own: no signal sent to the daemon's session
     * or process group (a terminal's Ctrl-C, a service manager) reaches it. */
    if (setsid() < 0)
        step = CYG_SPAWN_SETSID;
    if (step == CYG_SPAWN_OK)
        step = setup_fds(job);
    if (step == CYG_SPAWN_OK)
        step = drop_privileges(req);
    if (step == CYG_SPAWN_OK && chdir(req->cwd) != 0)
        step = CYG_SPAWN_CHDIR;
    if (step == CYG_SPAWN_OK) {
        umask(077);
        sigprocmask(SIG_SETMASK, &job->old_mask, NULL);
        execve(req->argv[0], req->argv, req->envp);
        step = CYG_SPAWN_EXEC;
    }
    report(job->pipe_w, step, errno);
    _exit(127);
}

/* Exits as soon as the grandchild has exec'd (or died), so PID 1 adopts it. */
CHILD_ENTRY static int middle_main(void *arg)
{
    spawn_job *job = arg;
    pid_t pid = clone(grandchild_main, job->grandchild_stack_top,
                      CLONE_VM | CLONE_VFORK | SIGCHLD, job);
    if (pid < 0)
        report(job->pipe_w, CYG_SPAWN_FORK, errno);
    job->grandchild = pid;
    _exit(0);
}

/* ---- the parent -------------------------------------------------------- */

/* The write end must not land on 0-2, which the grandchild overwrites. */
static int error_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    if (fds[1] >= 3)
        return 0;
    int moved = fcntl(fds[1], F_DUPFD_CLOEXEC, 3);
    close(fds[1]);
    fds[1] = moved;
    if (moved >= 0)
        return 0;
    close(fds[0]);
    return -1;
}

/* req->keep_fds plus the pipe, sorted, so gaps can be closed in ranges. */
static int *sorted_keep(const cyg_spawn_request *req, int pipe_w, size_t *n)
{
    int *keep = malloc((req->n_keep + 1) * sizeof *keep);
    if (keep == NULL)
        return NULL;
    *n = 0;
    keep[(*n)++] = pipe_w;
    for (size_t i = 0; i < req->n_keep; i++)
        keep[(*n)++] = req->keep_fds[i];
    for (size_t i = 1; i < *n; i++)
        for (size_t j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    return keep;
}

/* Runs both children; returns the report read from the pipe. */
static cyg_spawn_report run_children(spawn_job *job, char *stacks, int pipe_r)
{
    cyg_spawn_report r = {CYG_SPAWN_OK, 0};
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &job->old_mask);
    job->grandchild_stack_top = stacks + 2 * CHILD_STACK;
    pid_t middle = clone(middle_main, stacks + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, job);
    int clone_err = errno;
    pthread_sigmask(SIG_SETMASK, &job->old_mask, NULL);
    close(job->pipe_w);
    if (middle < 0)
        return (cyg_spawn_report){CYG_SPAWN_FORK, clone_err};
    while (waitpid(middle, NULL, 0) < 0 && errno == EINTR) {
    }
    ssize_t got;
    do
        got = read(pipe_r, &r, sizeof r);
    while (got < 0 && errno == EINTR);
    if (got == 0 && job->grandchild > 0)
        return (cyg_spawn_report){CYG_SPAWN_OK, 0};
    if (got != (ssize_t)sizeof r || r.step == CYG_SPAWN_OK)
        return (cyg_spawn_report){CYG_SPAWN_LOST, got < 0 ? errno : ECHILD};
    return r;
}

pid_t cyg_spawn_detached(const cyg_spawn_request *req, cyg_spawn_report *report_out)
{
    int fds[2];
    if (error_pipe(fds) != 0) {
        *report_out = (cyg_spawn_report){CYG_SPAWN_PIPE, errno};
        return -1;
    }
    spawn_job job = {.req = req, .pipe_w = fds[1], .grandchild = -1};
    int *keep = sorted_keep(req, fds[1], &job.n_keep);
    char *stacks = mmap(NULL, 2 * CHILD_STACK, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (keep == NULL || stacks == MAP_FAILED) {
        *report_out = (cyg_spawn_report){CYG_SPAWN_PIPE, keep == NULL ? ENOMEM : errno};
        if (stacks != MAP_FAILED)
            munmap(stacks, 2 * CHILD_STACK);
        free(keep);
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    job.keep = keep;
    *report_out = run_children(&job, stacks, fds[0]);
    munmap(stacks, 2 * CHILD_STACK);
    free(keep);
    close(fds[0]);
    return report_out->step == CYG_SPAWN_OK ? job.grandchild : -1;
}
