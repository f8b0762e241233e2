/*
 * cygnet-wal: Postgres' archive_command and restore_command for Cygnet.
 *
 *   cygnet-wal archive SPOOL_DIR MAX_BYTES WAL_PATH WAL_NAME
 *     Copies a finished WAL file into the branch's spool with fsync (file and
 *     directory), atomically by rename. cygnetd ingests the spool into the
 *     backup repository. Fails (so Postgres keeps the WAL) when the spool would
 *     hold more than MAX_BYTES, or when a different file of that name is there.
 *
 *   cygnet-wal restore STAGE_DIR WAL_NAME DEST_PATH
 *     Hard-links STAGE_DIR/WAL_NAME to DEST_PATH. cygnetd stages the files a
 *     recovery may read, chosen by LSN range along the branch's ancestry, and
 *     marks each one it will stage with WAL_NAME.pending first: a pending file is
 *     waited for, a name that is neither staged nor pending is "not found".
 *
 * A C program, not a script: Postgres runs it once per 16 MiB segment, and an
 * interpreter start would cost more than the copy (benchmarks/bench_archive.py).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (1 << 20)
#define WAIT_LIMIT_MS (10 * 60 * 1000)

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "cygnet-wal: %s %s: %s\n", what, path, errno ? strerror(errno) : "");
    return 1;
}

/* WAL file names are hex digits, dots and a few lower-case suffix letters. */
static int valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64 || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'z') ||
              c == '.'))
            return 0;
    }
    return 1;
}

/* Bytes of the finished files in dir (temporary files start with a dot). */
static long long spool_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    long long total = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            total += st.st_size;
    }
    closedir(d);
    return total;
}

static int same_content(int a, int b)
{
    static char x[BUF_SIZE], y[BUF_SIZE];
    for (;;) {
        ssize_t n = read(a, x, sizeof x);
        if (n < 0)
            return -1;
        ssize_t got = 0;
        while (got < n) {
            ssize_t m = read(b, y + got, (size_t)(n - got));
            if (m <= 0)
                return m < 0 ? -1 : 0;
            got += m;
        }
        if (memcmp(x, y, (size_t)n) != 0)
            return 0;
        if (n == 0)
            return read(b, y, 1) == 0;
    }
}

static int all_zero(const char *p, size_t n)
{
    static const char zeros[4096];
    for (size_t off = 0; off < n; off += sizeof zeros) {
        size_t len = n - off < sizeof zeros ? n - off : sizeof zeros;
        if (memcmp(p + off, zeros, len) != 0)
            return 0;
    }
    return 1;
}

/* Copies in to out, leaving holes for zero chunks: a segment closed early by
 * archive_timeout is mostly zeros (Cygnet turns WAL recycling off), and the
 * spool then holds only its WAL. */
static int copy_fd(int in, int out)
{
    static char buf[BUF_SIZE];
    off_t total = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0)
            return -1;
        if (n == 0)
            return ftruncate(out, total);
        if (all_zero(buf, (size_t)n)) {
            if (lseek(out, n, SEEK_CUR) < 0)
                return -1;
        } else {
            for (ssize_t off = 0; off < n;) {
                ssize_t m = write(out, buf + off, (size_t)(n - off));
                if (m < 0)
                    return -1;
                off += m;
            }
        }
        total += n;
    }
}

static int archive(const char *dir, const char *max_text, const char *src, const char *name)
{
    char dest[PATH_MAX], tmp[PATH_MAX];
    char *end;
    long long max = strtoll(max_text, &end, 10);
    if (*end || max <= 0)
        return errno = EINVAL, fail("bad MAX_BYTES", max_text);
    if (!valid_name(name))
        return errno = EINVAL, fail("bad WAL name", name);
    snprintf(dest, sizeof dest, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return fail("cannot open", src);
    struct stat st;
    if (fstat(in, &st) != 0)
        return fail("cannot stat", src);
    int old = open(dest, O_RDONLY | O_CLOEXEC);
    if (old >= 0) {
        /* A retry after a crash: fine if it is the same file, never overwritten. */
        int same = same_content(in, old);
        close(old);
        if (same == 1)
            return 0;
        errno = EEXIST;
        return fail("a different file is already spooled as", dest);
    }
    long long used = spool_bytes(dir);
    if (used < 0)
        return fail("cannot read spool", dir);
    if (used + st.st_size > max) {
        fprintf(stderr, "cygnet-wal: spool %s holds %lld bytes, bound %lld: keeping %s in "
                "pg_wal until cygnetd catches up\n", dir, used, max, name);
        return 1;
    }
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0)
        return fail("cannot create", tmp);
    /* The copy keeps the segment's mtime: the time of its last WAL, which says
     * how recent the archive is (cygnet/wal/repo.py). */
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (st.st_mtim.tv_nsec == 0) {
        /* A filesystem with whole-second times (zfs-fuse): the last write was
         * within that second and before now, when Postgres hands the file over. */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        struct timespec ceiling = {st.st_mtim.tv_sec, 999999999L};
        times[1] = (now.tv_sec < ceiling.tv_sec ||
                    (now.tv_sec == ceiling.tv_sec && now.tv_nsec < ceiling.tv_nsec))
                       ? now : ceiling;
    }
    if (copy_fd(in, out) != 0 || futimens(out, times) != 0 || fsync(out) != 0) {
        int saved = errno;
        close(out);
        unlink(tmp);
        errno = saved;
        return fail("cannot write", tmp);
    }
    close(out);
    close(in);
    if (rename(tmp, dest) != 0)
        return fail("cannot rename to", dest);
    int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0 || fsync(d) != 0)
        return fail("cannot fsync", dir);
    close(d);
    return 0;
}

static int restore(const char *dir, const char *name, const char *dest)
{
    char staged[PATH_MAX], pending[PATH_MAX], failed[PATH_MAX];
    if (!valid_name(name))
        return errno = EINVAL, fail("bad WAL name", name);
    snprintf(staged, sizeof staged, "%s/%s", dir, name);
    snprintf(pending, sizeof pending, "%s/%s.pending", dir, name);
    snprintf(failed, sizeof failed, "%s/.failed", dir);
    struct timespec pause = {0, 2 * 1000 * 1000};
    for (int waited = 0; waited < WAIT_LIMIT_MS * 1000 / 2000; waited++) {
        unlink(dest);
        if (link(staged, dest) == 0)
            return 0;
        if (errno != ENOENT)
            return fail("cannot link", staged);
        if (access(pending, F_OK) != 0 || access(failed, F_OK) == 0)
            return 1; /* not part of this recovery's plan: "not found" */
        nanosleep(&pause, NULL);
    }
    errno = ETIMEDOUT;
    return fail("gave up waiting for", staged);
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "archive") == 0)
        return archive(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 5 && strcmp(argv[1], "restore") == 0)
        return restore(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: cygnet-wal archive SPOOL_DIR MAX_BYTES WAL_PATH WAL_NAME\n"
                    "       cygnet-wal restore STAGE_DIR WAL_NAME DEST_PATH\n");
    return 2;
}
