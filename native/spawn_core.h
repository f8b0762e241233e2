/* Detached process start without Python (see spawn_core.c); the C tests
 * call it directly. */
#ifndef CYGNET_SPAWN_CORE_H
#define CYGNET_SPAWN_CORE_H

#include <stddef.h>
#include <sys/types.h>

/* The step of the start that failed, reported with its errno. */
typedef enum {
    CYG_SPAWN_OK = 0,
    CYG_SPAWN_PIPE,      /* the error pipe or the children's stacks */
    CYG_SPAWN_FORK,      /* clone() of either child */
    CYG_SPAWN_SETSID,
    CYG_SPAWN_STDIO,     /* /dev/null on 0, log_fd on 1 and 2 */
    CYG_SPAWN_CLOSE_FDS, /* closing inherited descriptors */
    CYG_SPAWN_KEEP_FDS,  /* a descriptor to keep is not open */
    CYG_SPAWN_SETGROUPS,
    CYG_SPAWN_SETGID,
    CYG_SPAWN_SETUID,
    CYG_SPAWN_CHDIR,
    CYG_SPAWN_EXEC,
    CYG_SPAWN_LOST, /* no report and no pid: should never happen */
} cyg_spawn_step;

typedef struct {
    char *const *argv; /* argv[0] is an absolute path; NULL-terminated */
    char *const *envp; /* NULL-terminated */
    uid_t uid;
    gid_t gid;
    int log_fd; /* becomes stdout and stderr */
    const char *cwd;
    const int *keep_fds; /* descriptors >= 3 the program inherits, as they are */
    size_t n_keep;
} cyg_spawn_request;

typedef struct {
    int step; /* a cyg_spawn_step */
    int err;  /* errno of that step */
} cyg_spawn_report;

/* Starts req->argv as a grandchild (PID 1 becomes its parent) in a session of
 * its own. Returns its pid once it has exec'd, or -1 with *report saying
 * which step failed. No fork handler (pthread_atfork) runs, in the caller or
 * in the children. Safe to call from any thread, without the GIL. */
pid_t cyg_spawn_detached(const cyg_spawn_request *req, cyg_spawn_report *report);

/* Closes every descriptor >= lo except those in keep (sorted ascending).
 * Uses close_range(2) unless `scan` is set or the kernel lacks it; then
 * scans /proc/self/fd, then loops up to RLIMIT_NOFILE. Async-signal-safe.
 * Returns 0 or -1 with errno. */
int cyg_close_fds_except(int lo, const int *keep, size_t n_keep, int scan);

const char *cyg_spawn_step_name(int step);

#endif
