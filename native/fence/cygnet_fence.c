/*
 * cygnet_fence: a primary stops accepting writes when its host's lease expires.
 *
 * Postmasters outlive cygnetd by design, so the lease is enforced inside
 * Postgres itself (docs/ha.md "Fencing"). cygnetd writes the host's lease
 * deadline into a file each time the coordinator renews the lease:
 *
 *     BOOT_ID DEADLINE_NS\n
 *
 * DEADLINE_NS is CLOCK_BOOTTIME in nanoseconds (it never jumps with the wall
 * clock) and BOOT_ID is /proc/sys/kernel/random/boot_id: a file left from
 * before a reboot has another boot id and counts as expired.
 *
 * Two checks, both fail-safe (a missing or unreadable file is an expired lease):
 *  - every transaction that wrote checks the deadline before it commits
 *    (XACT_EVENT_PRE_COMMIT) and fails after it: the cluster is read-only;
 *  - a background worker polls every 100 ms and, at the deadline, writes
 *    PGDATA/cygnet_fenced and stops the postmaster with a fast shutdown, which
 *    ends every in-flight transaction. The marker keeps the cluster read-only
 *    after any restart until cygnetd removes it (only once the coordinator
 *    says this host still holds the database's primary); a cluster that starts
 *    with the marker also has default_transaction_read_only on, so clients
 *    asking for target_session_attrs=read-write skip it.
 *
 * cygnet_fence.failsafe_file, when set, names a second file of the same form:
 * the database's own deadline, which cygnetd's failsafe rounds extend while
 * every replica of this database confirms it and no coordinator renews the
 * host's lease. The lease holds while either deadline is ahead.
 *
 * Off (no check at all) while cygnet_fence.deadline_file is empty, and on a
 * standby (recovery writes nothing; the worker starts once promoted).
 */
#include "postgres.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/wait_event.h"

PG_MODULE_MAGIC;

#define FENCED_MARKER "cygnet_fenced"
#define POLL_MS 100

void _PG_init(void);
PGDLLEXPORT void cygnet_fence_main(Datum arg);

static char *deadline_file = NULL;
static char *failsafe_file = NULL;

/* The running kernel's boot id (36 characters), or "" when unreadable. */
static void read_boot_id(char *out, size_t size)
{
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, out, size - 1) : -1;

    if (fd >= 0)
        close(fd);
    if (n < 0)
        n = 0;
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
}

/* True while the file names this boot and a deadline still ahead. */
static bool deadline_ahead(const char *path)
{
    char buf[128], boot[64], file_boot[64];
    unsigned long long deadline;
    struct timespec now;
    ssize_t n;
    int fd;

    fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    if (sscanf(buf, "%63s %llu", file_boot, &deadline) != 2)
        return false;
    read_boot_id(boot, sizeof(boot));
    if (boot[0] == '\0' || strcmp(boot, file_boot) != 0)
        return false;
    if (clock_gettime(CLOCK_BOOTTIME, &now) != 0)
        return false;
    return (unsigned long long) now.tv_sec * 1000000000ULL + now.tv_nsec < deadline;
}

/* The host's lease, or this database's failsafe deadline. */
static bool lease_valid(void)
{
    if (deadline_ahead(deadline_file))
        return true;
    return failsafe_file != NULL && failsafe_file[0] != '\0' && deadline_ahead(failsafe_file);
}

static bool fence_enabled(void)
{
    return deadline_file != NULL && deadline_file[0] != '\0';
}

static bool marker_present(void)
{
    struct stat st;

    /* Relative to the data directory, the cwd of every Postgres process. */
    return stat(FENCED_MARKER, &st) == 0;
}

static void write_marker(void)
{
    int fd = open(FENCED_MARKER, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    if (fd >= 0)
    {
        (void) fsync(fd);
        close(fd);
    }
}

/* Refuses the commit of a transaction that wrote, once the lease is gone. */
static void fence_xact_callback(XactEvent event, void *arg)
{
    if (event != XACT_EVENT_PRE_COMMIT && event != XACT_EVENT_PRE_PREPARE)
        return;
    if (!fence_enabled() || !TransactionIdIsValid(GetTopTransactionIdIfAny()))
        return;
    if (RecoveryInProgress())
        return;
    if (marker_present() || !lease_valid())
        ereport(ERROR,
                (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                 errmsg("this host's lease has expired: the database is fenced and refuses writes"),
                 errhint("Another host may have been promoted; connect with target_session_attrs=read-write.")));
}

void cygnet_fence_main(Datum arg)
{
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();

    for (;;)
    {
        (void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                         POLL_MS, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending)
        {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
        /* A marker found at start is already a fenced, read-only cluster. */
        if (!fence_enabled() || marker_present() || lease_valid())
            continue;
        write_marker();
        ereport(LOG,
                (errmsg("cygnet_fence: this host's lease expired; stopping the primary")));
        /* Fast shutdown: every backend is ended, in-flight transactions abort. */
        kill(PostmasterPid, SIGINT);
        proc_exit(0);
    }
}

void _PG_init(void)
{
    BackgroundWorker worker;

    DefineCustomStringVariable("cygnet_fence.deadline_file",
                               "File holding this host's lease deadline (empty: no fence).",
                               NULL, &deadline_file, "", PGC_SIGHUP, 0,
                               NULL, NULL, NULL);
    DefineCustomStringVariable("cygnet_fence.failsafe_file",
                               "File holding this database's failsafe deadline (empty: none).",
                               NULL, &failsafe_file, "", PGC_SIGHUP, 0,
                               NULL, NULL, NULL);
    MarkGUCPrefixReserved("cygnet_fence");
    RegisterXactCallback(fence_xact_callback, NULL);

    if (!process_shared_preload_libraries_in_progress)
        return;
    /* A fenced cluster says it is read-only, so target_session_attrs=read-write
     * clients move on to the new primary (the commit check still holds). */
    if (fence_enabled() && marker_present())
        SetConfigOption("default_transaction_read_only", "on", PGC_POSTMASTER,
                        PGC_S_OVERRIDE);
    memset(&worker, 0, sizeof(worker));
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
    /* Only a primary writes; a standby's worker starts when it is promoted. */
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = 1;
    snprintf(worker.bgw_library_name, BGW_MAXLEN, "cygnet_fence");
    snprintf(worker.bgw_function_name, BGW_MAXLEN, "cygnet_fence_main");
    snprintf(worker.bgw_name, BGW_MAXLEN, "cygnet fence");
    snprintf(worker.bgw_type, BGW_MAXLEN, "cygnet fence");
    RegisterBackgroundWorker(&worker);
}
