/* C tests of the parts of cygnet._native that need no Python: the dedup
 * table, file hashing and detached spawn. tests/unit/test_native_c.py builds
 * this with -DCYG_TEST_HOOKS under AddressSanitizer and UBSan and runs it.
 * Prints one line per failed check; exits 1 if any failed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../dedup_table.h"
#include "../file_hash.h"
#include "../hash_kernels.h"
#include "../spawn_core.h"

static int failures;

#define CHECK(cond)                                                               \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, \
                    __func__, #cond);                                             \
            failures++;                                                           \
        }                                                                         \
    } while (0)

static char tmpdir[] = "/tmp/cygnet-native-test-XXXXXX";

/* ---- dedup table ------------------------------------------------------- */

static void digest_of(unsigned n, unsigned char out[16])
{
    memset(out, 0xab, 16);
    memcpy(out, &n, sizeof n);
}

static void test_table_insert_lookup_remove(void)
{
    cyg_table t = {0};
    unsigned char d[16];
    for (unsigned i = 0; i < 1000; i++) {
        digest_of(i, d);
        CHECK(cyg_table_insert(&t, d, i, i * 2, i, (uint16_t)(i % 7)) == 1);
    }
    digest_of(5, d);
    CHECK(cyg_table_insert(&t, d, 99, 99, 99, 0) == 0); /* the first location wins */
    CHECK(cyg_table_lookup(&t, d)->pack_id == 5);
    for (unsigned i = 0; i < 1000; i += 2) {
        digest_of(i, d);
        cyg_table_remove(&t, cyg_table_lookup(&t, d));
    }
    CHECK(t.count == 500);
    for (unsigned i = 0; i < 1000; i++) {
        digest_of(i, d);
        cyg_slot *s = cyg_table_lookup(&t, d);
        CHECK((s != NULL) == (i % 2 == 1));
        if (s != NULL)
            CHECK(s->offset == i * 2 && s->slot == i % 7);
    }
    cyg_table_free(&t);
}

/* A frame whose inserts need a resize that fails leaves the table as it was. */
static void test_insert_frame_is_all_or_nothing(void)
{
    cyg_table t = {0};
    unsigned char d[16], frame[8 * 16], records[8 * CYG_RECORD_SIZE];
    for (unsigned i = 0; i < 10; i++) { /* 10 of 16 slots: the 12th entry needs 32 */
        digest_of(i, d);
        CHECK(cyg_table_insert(&t, d, 1, 0, 0, 0) == 1);
    }
    for (unsigned k = 0; k < 8; k++)
        digest_of(k < 2 ? k : 100 + k, frame + k * 16); /* two are present already */
    cyg_slot *before = t.slots;
    cyg_table_allocs_left = 0;
    CHECK(cyg_table_insert_frame(&t, frame, 8, 7, 4096, 300, records) == -1);
    cyg_table_allocs_left = -1;
    CHECK(t.count == 10 && t.slots == before);
    for (unsigned k = 2; k < 8; k++)
        CHECK(cyg_table_lookup(&t, frame + k * 16) == NULL);
    CHECK(cyg_table_insert_frame(&t, frame, 8, 7, 4096, 300, records) == 6);
    CHECK(t.count == 16);
    cyg_slot s;
    uint64_t slot;
    cyg_record_read(records, &s, &slot);
    CHECK(memcmp(s.digest, frame + 2 * 16, 16) == 0 && slot == 2 && s.pack_id == 7);
    CHECK(s.offset == 4096 && s.length == 300);
    cyg_table_free(&t);
}

/* ---- hashing ----------------------------------------------------------- */

static char *write_file(const char *name, const unsigned char *data, size_t len)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL && fwrite(data, 1, len, f) == len);
    if (f != NULL)
        fclose(f);
    return path;
}

/* Hashes a file the way hashing.c does: ranges, else chunk by chunk. */
static cyg_hash_rc hash_path(const char *path, cyg_digests *out, int *err)
{
    int fd;
    size_t size;
    cyg_hash_rc rc = cyg_hash_open(path, out, &fd, &size, err);
    if (rc != CYG_HASH_OK)
        return rc;
    rc = cyg_hash_ranges(fd, size, out, err);
    if (rc == CYG_HASH_SEQUENTIAL) {
        unsigned char *buf = malloc(CYG_READ_CHUNK);
        do
            rc = cyg_hash_next_chunk(fd, buf, out, err);
        while (rc == CYG_HASH_OK);
        free(buf);
        rc = rc == CYG_HASH_EOF ? CYG_HASH_OK : rc;
    }
    close(fd);
    return rc;
}

static void check_file_digests(size_t len)
{
    unsigned char *data = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);
    size_t n = (len + 8191) / 8192;
    unsigned char *want = malloc(n * 16 + 1);
    cyg_hash_blocks(data, len, want);
    cyg_digests got = {NULL, 0, 0};
    int err = 0;
    CHECK(hash_path(write_file("f", data, len), &got, &err) == CYG_HASH_OK);
    CHECK(got.len == n * 16 && (n == 0 || memcmp(got.data, want, n * 16) == 0));
    free(got.data);
    free(want);
    free(data);
}

static void test_hash_file(void)
{
    size_t sizes[] = {0, 1, 8191, 8192, 3 * 8192 + 17, CYG_READ_CHUNK + 5, (33u << 20) + 100};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        check_file_digests(sizes[i]);
    cyg_digests got = {NULL, 0, 0};
    int err = 0;
    CHECK(hash_path("/nonexistent/file", &got, &err) == CYG_HASH_OS_ERROR && err == ENOENT);
    CHECK(hash_path("/", &got, &err) == CYG_HASH_OS_ERROR && err == EISDIR);
    free(got.data);
}

/* ---- spawn --------------------------------------------------------------- */

static volatile int atfork_calls; /* shared with CLONE_VM children */
static void on_fork(void) { atfork_calls++; }

static pid_t spawn(char *const *argv, const char *cwd, const int *keep, size_t n_keep,
                   cyg_spawn_report *r)
{
    static char *const envp[] = {"PATH=/usr/bin:/bin", NULL};
    int log_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    cyg_spawn_request req = {argv, envp, getuid(), getgid(), log_fd, cwd, keep, n_keep};
    pid_t pid = cyg_spawn_detached(&req, r);
    close(log_fd);
    return pid;
}

/* Field `n` (1-based, after the command) of /proc/PID/stat; -1 if gone. */
static long stat_field(pid_t pid, int n)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *p = strrchr(buf, ')');
    for (int i = 0; p != NULL && i < n; i++)
        p = strchr(p + 1, ' ');
    return p == NULL ? -1 : strtol(p + 1, NULL, 10);
}

/* Descriptors of pid as a bit set of 0..63 (set bit 63 for any above). */
static unsigned long long fds_of(pid_t pid)
{
    char cmd[96], line[64];
    unsigned long long set = 0;
    snprintf(cmd, sizeof cmd, "ls /proc/%d/fd", (int)pid);
    FILE *p = popen(cmd, "r");
    while (p != NULL && fgets(line, sizeof line, p) != NULL) {
        long fd = strtol(line, NULL, 10);
        set |= 1ull << (fd < 63 ? fd : 63);
    }
    if (p != NULL)
        pclose(p);
    return set;
}

/* The program runs detached, sees only stdio and the kept descriptor, and
 * no fork handler ran anywhere. */
static void test_spawn_runs_detached_with_only_kept_fds(void)
{
    int stray = open("/dev/null", O_RDONLY);  /* inheritable, not kept */
    int kept = open("/dev/null", O_RDONLY);
    int high = fcntl(stray, F_DUPFD, 40); /* past the kept one: another gap */
    char *const argv[] = {"/bin/sleep", "30", NULL};
    cyg_spawn_report r;
    atfork_calls = 0;
    pid_t pid = spawn(argv, "/", &kept, 1, &r);
    CHECK(pid > 0 && r.step == CYG_SPAWN_OK);
    CHECK(atfork_calls == 0);
    if (pid > 0) {
        CHECK(fds_of(pid) == (0x7ull | 1ull << kept));
        CHECK(stat_field(pid, 1) != getpid()); /* parent: PID 1 or a subreaper */
        CHECK(stat_field(pid, 4) == pid);      /* leader of its own session */
        kill(pid, SIGKILL);
    }
    close(stray);
    close(kept);
    close(high);
}

static void test_spawn_reports_failures(void)
{
    char *const missing[] = {"/nonexistent/program", NULL};
    char *const not_exec[] = {write_file("data", (const unsigned char *)"x", 1), NULL};
    char *const ok[] = {"/bin/true", NULL};
    int closed = 1000;
    cyg_spawn_report r;
    CHECK(spawn(missing, "/", NULL, 0, &r) == -1);
    CHECK(r.step == CYG_SPAWN_EXEC && r.err == ENOENT);
    CHECK(spawn(not_exec, "/", NULL, 0, &r) == -1);
    CHECK(r.step == CYG_SPAWN_EXEC && r.err == EACCES);
    CHECK(spawn(ok, "/nonexistent", NULL, 0, &r) == -1);
    CHECK(r.step == CYG_SPAWN_CHDIR && r.err == ENOENT);
    CHECK(spawn(ok, "/", &closed, 1, &r) == -1);
    CHECK(r.step == CYG_SPAWN_KEEP_FDS && r.err == EBADF);
    CHECK(strcmp(cyg_spawn_step_name(CYG_SPAWN_EXEC), "exec") == 0);
    CHECK(atfork_calls == 0);
}

/* Both ways of closing, in a forked child so the test's own fds survive. */
static void test_close_fds_except(void)
{
    for (int scan = 0; scan < 2; scan++) {
        pid_t pid = fork();
        if (pid == 0) {
            int a = fcntl(0, F_DUPFD, 20), b = fcntl(0, F_DUPFD, 30), c = fcntl(0, F_DUPFD, 50);
            int keep[] = {b, 60}; /* 60 is not open: keeping it is harmless */
            if (cyg_close_fds_except(3, keep, 2, scan) != 0)
                _exit(2);
            int ok = fcntl(a, F_GETFD) < 0 && fcntl(b, F_GETFD) >= 0 && fcntl(c, F_GETFD) < 0 &&
                     fcntl(0, F_GETFD) >= 0 && fcntl(2, F_GETFD) >= 0;
            _exit(ok ? 0 : 1);
        }
        int status = -1;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

int main(void)
{
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    pthread_atfork(on_fork, on_fork, on_fork);
    test_table_insert_lookup_remove();
    test_insert_frame_is_all_or_nothing();
    test_hash_file();
    test_spawn_runs_detached_with_only_kept_fds();
    test_spawn_reports_failures();
    test_close_fds_except();
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        failures++;
    printf("%s: %d failed checks\n", failures ? "FAIL" : "OK", failures);
    return failures ? 1 : 0;
}
