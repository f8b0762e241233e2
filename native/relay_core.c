/* The relay loop (relay_core.h).
 *
 * Level-triggered epoll. Each direction has a buffer: while it holds bytes
 * the destination is watched for EPOLLOUT and the source is not read, so a
 * slow reader throttles its writer (TCP back-pressure end to end). A query
 * of pgbench -S costs one read and one write per direction: a short read
 * means the socket is drained, so no read is spent on EAGAIN.
 * Pairs closed while a batch of events is handled are freed after it, since
 * a later event of the same batch may still point at them. New pairs are
 * queued and registered by the relay thread itself, so no other thread ever
 * touches a pair the loop may be handling.
 *
 * A side may carry a TLS session (clients routed by `options=endpoint=`, whose
 * TLS the endpoint ends): its bytes go through SSL_read and SSL_write. Such a
 * session can hold decrypted bytes the socket no longer shows, so a pair is
 * pumped once when it arrives, and a read stops only when the session holds
 * nothing more. What a session waits for besides the buffers (a key update
 * may make a read write) is watched too, and then both directions are tried. */
#define _GNU_SOURCE
#include "relay_core.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

/* A TLS record and then some: per connection 2 x 16 KiB, touched only as far as
 * messages reach, since the buffers are not zeroed. */
#define RELAY_BUF (16 * 1024)
#define RELAY_EVENTS 256

struct relay_pair;

struct relay_side {
    int fd;
    uint32_t interest;
    uint32_t tls_wants;  /* epoll events the TLS session waits for, beyond the buffers */
    SSL *ssl;            /* NULL: the bytes move as they are */
    struct relay_pair *pair;
};

enum { IO_AGAIN = -1, IO_FAIL = -2 };

/* Bytes read from one side and not yet written to the other. */
struct relay_dir {
    size_t off, len;
    int eof;       /* the source said end of file */
    int shut;      /* and the destination was shut for writing */
    char buf[RELAY_BUF];
};

struct relay_pair {
    struct relay_side side[2];   /* 0: client, 1: server */
    struct relay_dir dir[2];     /* dir[i]: side[i] -> side[1 - i] */
    int dead;
    struct relay_pair *next;   /* in the queue of new pairs, then of dead ones */
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int epfd = -1, wakefd = -1;
static int start_errno;
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static struct relay_pair *queue;
static _Atomic uint64_t n_active, n_total, n_up, n_down, n_tls;

static int has_tls(const struct relay_pair *p)
{
    return p->side[0].ssl != NULL || p->side[1].ssl != NULL;
}

/* IO_AGAIN or IO_FAIL for a TLS call that did not complete; 0 for a clean end. */
static ssize_t tls_stopped(struct relay_side *s, int ret, int reading)
{
    int err = SSL_get_error(s->ssl, ret);
    ERR_clear_error();
    switch (err) {
    case SSL_ERROR_WANT_READ:
        if (!reading)
            s->tls_wants |= EPOLLIN;
        return IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        if (reading)
            s->tls_wants |= EPOLLOUT;
        return IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return reading ? 0 : IO_FAIL;
    default:
        return IO_FAIL;
    }
}

/* Bytes read (> 0), 0 at end of file, IO_AGAIN or IO_FAIL. */
static ssize_t side_recv(struct relay_side *s, char *buf, size_t len)
{
    if (s->ssl != NULL) {
        size_t got = 0;
        int ret = SSL_read_ex(s->ssl, buf, len, &got);
        return ret > 0 ? (ssize_t)got : tls_stopped(s, ret, 1);
    }
    for (;;) {
        ssize_t n = recv(s->fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return errno == EAGAIN ? IO_AGAIN : IO_FAIL;
    }
}

/* Bytes written (> 0), IO_AGAIN or IO_FAIL. */
static ssize_t side_send(struct relay_side *s, const char *buf, size_t len)
{
    if (s->ssl != NULL) {
        size_t put = 0;
        int ret = SSL_write_ex(s->ssl, buf, len, &put);
        return ret > 0 ? (ssize_t)put : tls_stopped(s, ret, 0);
    }
    for (;;) {
        ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return errno == EAGAIN ? IO_AGAIN : IO_FAIL;
    }
}

/* No more bytes toward `s`: TLS says so first (close_notify, best effort). */
static void side_shut(struct relay_side *s)
{
    if (s->ssl != NULL) {
        SSL_shutdown(s->ssl);
        ERR_clear_error();
    }
    shutdown(s->fd, SHUT_WR);
}

static void close_pair(struct relay_pair *p, struct relay_pair **dead)
{
    if (p->dead)
        return;
    p->dead = 1;
    if (has_tls(p))
        atomic_fetch_sub(&n_tls, 1);
    for (int i = 0; i < 2; i++) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, p->side[i].fd, NULL);
        close(p->side[i].fd);
        SSL_free(p->side[i].ssl);  /* (NULL is fine) */
        p->side[i].ssl = NULL;
    }
    p->next = *dead;
    *dead = p;
    atomic_fetch_sub(&n_active, 1);
}

/* Moves what it can from side[i] to side[1 - i]; -1 when the pair must close.
 * Bounded to 16 full buffers, so one busy pair cannot starve the others. */
static int pump(struct relay_pair *p, int i)
{
    struct relay_dir *d = &p->dir[i];
    struct relay_side *src = &p->side[i], *dst = &p->side[1 - i];
    _Atomic uint64_t *count = i == 0 ? &n_up : &n_down;
    int drained = 0;
    for (int round = 0; round < 16; round++) {
        while (d->off < d->len) {
            ssize_t n = side_send(dst, d->buf + d->off, d->len - d->off);
            if (n < 0)
                return n == IO_AGAIN ? 0 : -1;
            d->off += (size_t)n;
            atomic_fetch_add_explicit(count, (uint64_t)n, memory_order_relaxed);
        }
        d->off = d->len = 0;
        if (d->eof) {
            if (!d->shut) {
                side_shut(dst);
                d->shut = 1;
            }
            return 0;
        }
        if (drained)
            return 0;
        ssize_t n = side_recv(src, d->buf, RELAY_BUF);
        if (n < 0)
            return n == IO_AGAIN ? 0 : -1;
        if (n == 0)
            d->eof = 1;
        d->len = (size_t)n;
        /* A short read emptied the socket: flush it and wait for epoll. A TLS
         * session is empty when it holds no more (a read returns one record). */
        drained = src->ssl != NULL ? !SSL_has_pending(src->ssl) : (size_t)n < RELAY_BUF;
    }
    /* Out of turns: a session's held bytes show in no epoll event, so ask for
     * one that comes at once (a writable socket) to be called again. */
    if (src->ssl != NULL && SSL_has_pending(src->ssl))
        src->tls_wants |= EPOLLOUT;
    return 0;
}

/* What each side must be watched for now; 1 when both directions are done. */
static int rearm(struct relay_pair *p)
{
    if (p->dir[0].shut && p->dir[1].shut)
        return 1;
    for (int i = 0; i < 2; i++) {
        uint32_t want = 0;
        if (p->dir[i].len == 0 && !p->dir[i].eof)
            want |= EPOLLIN;
        if (p->dir[1 - i].len > p->dir[1 - i].off)
            want |= EPOLLOUT;
        want |= p->side[i].tls_wants;
        if (want != p->side[i].interest) {
            struct epoll_event ev = {.events = want, .data.ptr = &p->side[i]};
            if (epoll_ctl(epfd, EPOLL_CTL_MOD, p->side[i].fd, &ev) < 0)
                return -1;
            p->side[i].interest = want;
        }
    }
    return 0;
}

static void handle(struct relay_side *s, uint32_t events, struct relay_pair **dead)
{
    struct relay_pair *p = s->pair;
    if (p->dead)
        return;
    int k = (int)(s - p->side);
    int rc = 0;
    if (p->side[0].tls_wants | p->side[1].tls_wants) {
        /* A session waited for something other than its buffer: try both ways. */
        p->side[0].tls_wants = p->side[1].tls_wants = 0;
        rc = pump(p, 0) < 0 || pump(p, 1) < 0 ? -1 : 0;
    } else if (events & (EPOLLERR | EPOLLHUP))
        rc = pump(p, k) < 0 || pump(p, 1 - k) < 0 ? -1 : 0;
    else {
        if (events & EPOLLIN)
            rc = pump(p, k);
        if (rc == 0 && (events & EPOLLOUT))
            rc = pump(p, 1 - k);
    }
    if (rc == 0)
        rc = rearm(p);
    if (rc != 0)
        close_pair(p, dead);
}

/* Registers the queued pairs; one that cannot be watched is closed. */
static void take_queue(struct relay_pair **dead)
{
    uint64_t ignored;
    if (read(wakefd, &ignored, sizeof ignored) < 0 && errno != EAGAIN)
        return;
    pthread_mutex_lock(&queue_lock);
    struct relay_pair *p = queue;
    queue = NULL;
    pthread_mutex_unlock(&queue_lock);
    while (p != NULL) {
        struct relay_pair *next = p->next;
        int added = 0;
        for (; added < 2; added++) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &p->side[added]};
            if (epoll_ctl(epfd, EPOLL_CTL_ADD, p->side[added].fd, &ev) < 0)
                break;
        }
        /* The first pump: a TLS session may already hold the client's next bytes. */
        if (added < 2 || pump(p, 0) < 0 || pump(p, 1) < 0 || rearm(p) != 0)
            close_pair(p, dead);
        p = next;
    }
}

static void *relay_main(void *arg)
{
    (void)arg;
    struct epoll_event events[RELAY_EVENTS];
    /* Every relayed message waits for this thread to run: on a busy host it goes
     * ahead of the daemon's other threads and of batch work (it only moves bytes,
     * so it cannot starve anyone). Fails quietly without CAP_SYS_NICE. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), -10);
    /* OpenSSL writes with write(), not send(MSG_NOSIGNAL): a peer gone must give
     * this thread EPIPE, never a SIGPIPE that would end the process. */
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    for (;;) {
        int n = epoll_wait(epfd, events, RELAY_EVENTS, -1);
        if (n < 0)
            continue;  /* EINTR */
        struct relay_pair *dead = NULL;
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL)
                take_queue(&dead);
            else
                handle(events[i].data.ptr, events[i].events, &dead);
        }
        while (dead != NULL) {
            struct relay_pair *next = dead->next;
            free(dead);
            dead = next;
        }
    }
    return NULL;
}

static void start(void)
{
    epfd = epoll_create1(EPOLL_CLOEXEC);
    wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epfd < 0 || wakefd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, &ev) < 0) {
        start_errno = errno;
        if (epfd >= 0)
            close(epfd);
        if (wakefd >= 0)
            close(wakefd);
        epfd = wakefd = -1;
        return;
    }
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&thread, &attr, relay_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        close(epfd);
        close(wakefd);
        epfd = wakefd = -1;
        start_errno = rc;
    }
}

int cyg_relay_add(int client_fd, SSL *client_ssl, int server_fd, SSL *server_ssl)
{
    pthread_once(&once, start);
    if (epfd < 0)
        return start_errno;
    struct relay_pair *p = malloc(sizeof *p);
    if (p == NULL)
        return ENOMEM;
    int fds[2] = {client_fd, server_fd};
    SSL *ssls[2] = {client_ssl, server_ssl};
    for (int i = 0; i < 2; i++) {
        p->side[i] = (struct relay_side){.fd = fds[i], .interest = EPOLLIN, .ssl = ssls[i],
                                         .pair = p};
        p->dir[i].off = p->dir[i].len = 0;
        p->dir[i].eof = p->dir[i].shut = 0;
    }
    p->dead = 0;
    p->next = NULL;
    atomic_fetch_add(&n_active, 1);
    atomic_fetch_add(&n_total, 1);
    if (has_tls(p))
        atomic_fetch_add(&n_tls, 1);
    pthread_mutex_lock(&queue_lock);
    p->next = queue;
    queue = p;
    pthread_mutex_unlock(&queue_lock);
    uint64_t one = 1;
    /* Cannot fail short of a counter at 2^64-1; the loop drains it each time. */
    (void)!write(wakefd, &one, sizeof one);
    return 0;
}

void cyg_relay_stats(struct cyg_relay_stats *out)
{
    out->active = atomic_load(&n_active);
    out->total = atomic_load(&n_total);
    out->up = atomic_load(&n_up);
    out->down = atomic_load(&n_down);
    out->tls = atomic_load(&n_tls);
}
