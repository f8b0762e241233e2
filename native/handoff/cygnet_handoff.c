/*
 * cygnet_handoff: the host endpoint hands a routed client's TCP socket to the
 * branch's own postmaster, so that once routed no relay sits in the data path.
 *
 * Loaded into every branch postmaster with LD_PRELOAD (postgres/process.py),
 * it wraps four libc calls and is inert unless a handoff arrives:
 *
 *  - accept() on the postmaster's unix socket in a directory named "handoff"
 *    (the second of unix_socket_directories, 0700 and owned by postgres) reads
 *    one message from cygnetd: a header and the client's socket (SCM_RIGHTS).
 *    It answers 'K' and returns the client's socket as if the postmaster had
 *    accepted it from its TCP port. Postgres then treats it as any TCP client:
 *    pg_hba's hostssl rules, TLS, SCRAM, with the client's real address.
 *  - recv() on that socket first returns the bytes the endpoint already read
 *    to route it (the client's SSLRequest), one recv at most, so Postgres sees
 *    no data beyond its request;
 *  - send() on it swallows the first bytes Postgres answers that the endpoint
 *    has already answered (the 'S' to the SSLRequest);
 *  - close() forgets the socket's state.
 *
 * A message that is not a handoff (wrong magic or size, a sender that is not
 * root or postgres, a descriptor that is not a TCP socket) is refused: the
 * unix connection is closed and accept() fails with ECONNABORTED, which the
 * postmaster logs and moves on from. Postgres without this library reads the
 * message's magic as an impossible startup packet length and closes the
 * connection, which is how cygnetd knows to relay instead (endpoint/handoff.py).
 *
 * The constructor removes LD_PRELOAD from the environment, so the postmaster's
 * children that exec (archive_command, restore_command) do not load it; the
 * backends, which only fork, keep it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#define HANDOFF_MAGIC "CYGH"
#define HANDOFF_DIR_TAIL "/handoff/.s.PGSQL."
#define MAX_PREFIX 64
#define SLOTS 8
#define READ_TIMEOUT_MS 2000

typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef ssize_t (*recv_fn)(int, void *, size_t, int);
typedef ssize_t (*send_fn)(int, const void *, size_t, int);
typedef int (*close_fn)(int);

static accept_fn real_accept;
static recv_fn real_recv;
static send_fn real_send;
static close_fn real_close;

/* A handed-off socket whose prefix or swallow is not used up yet. */
struct pending {
    int fd_plus_one;   /* 0: a free slot (zero-initialised before any constructor) */
    uint8_t prefix[MAX_PREFIX];
    size_t prefix_len; /* bytes to give recv() before the kernel's */
    size_t swallow;    /* bytes of Postgres' answers not to send */
};

static struct pending slots[SLOTS];
static int in_use; /* slots taken: the wrappers' fast path is a zero check */

/* Other libraries' constructors may call the wrappers before ours runs. */
static void resolve(void)
{
    if (real_close != NULL)
        return;
    real_accept = (accept_fn)dlsym(RTLD_NEXT, "accept");
    real_recv = (recv_fn)dlsym(RTLD_NEXT, "recv");
    real_send = (send_fn)dlsym(RTLD_NEXT, "send");
    real_close = (close_fn)dlsym(RTLD_NEXT, "close");
}

__attribute__((constructor)) static void handoff_init(void)
{
    resolve();
    unsetenv("LD_PRELOAD");
}

static struct pending *slot_of(int fd)
{
    if (in_use == 0)
        return NULL;
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].fd_plus_one == fd + 1)
            return &slots[i];
    return NULL;
}

static void forget(int fd)
{
    struct pending *p = slot_of(fd);
    if (p != NULL) {
        p->fd_plus_one = 0;
        in_use--;
    }
}

static int remember(int fd, const uint8_t *prefix, size_t prefix_len, size_t swallow)
{
    forget(fd);
    if (prefix_len == 0 && swallow == 0)
        return 0;
    for (int i = 0; i < SLOTS; i++) {
        if (slots[i].fd_plus_one == 0) {
            slots[i].fd_plus_one = fd + 1;
            memcpy(slots[i].prefix, prefix, prefix_len);
            slots[i].prefix_len = prefix_len;
            slots[i].swallow = swallow;
            in_use++;
            return 0;
        }
    }
    return -1;
}

static void settle(struct pending *p)
{
    if (p->prefix_len == 0 && p->swallow == 0) {
        p->fd_plus_one = 0;
        in_use--;
    }
}

/* True when `listener` is a unix socket in a directory named "handoff". */
static int is_handoff_listener(int listener)
{
    struct sockaddr_un addr;
    socklen_t len = sizeof(addr);
    memset(&addr, 0, sizeof(addr));
    if (getsockname(listener, (struct sockaddr *)&addr, &len) != 0 || addr.sun_family != AF_UNIX)
        return 0;
    addr.sun_path[sizeof(addr.sun_path) - 1] = '\0';
    return strstr(addr.sun_path, HANDOFF_DIR_TAIL) != NULL;
}

static int sender_allowed(int conn)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return 0;
    return cred.uid == 0 || cred.uid == geteuid();
}

/* A connected TCP socket: never a unix one (peer rules) nor a listener. */
static int is_tcp_socket(int fd)
{
    int domain = 0, type = 0, protocol = 0;
    socklen_t len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0)
        return 0;
    len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return 0;
    len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) != 0)
        return 0;
    struct sockaddr_storage peer;
    len = sizeof(peer);
    return (domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM
           && protocol == IPPROTO_TCP && getpeername(fd, (struct sockaddr *)&peer, &len) == 0;
}

/*
 * The message: "CYGH", one byte of bytes to swallow, one byte of prefix
 * length, then the prefix; the client's socket rides along as SCM_RIGHTS.
 * Returns the socket, or -1 (nothing kept open).
 */
static int read_handoff(int conn, uint8_t *prefix, size_t *prefix_len, size_t *swallow)
{
    uint8_t buf[6 + MAX_PREFIX];
    union {
        char space[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control.space, .msg_controllen = sizeof(control.space)};
    struct timeval timeout = {.tv_sec = READ_TIMEOUT_MS / 1000,
                              .tv_usec = (READ_TIMEOUT_MS % 1000) * 1000};
    int fd = -1;

    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); n > 0 && c != NULL; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS
            && c->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(&fd, CMSG_DATA(c), sizeof(int));
    if (fd < 0)
        return -1;
    if (n < 6 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || memcmp(buf, HANDOFF_MAGIC, 4) != 0
        || buf[5] > MAX_PREFIX || (size_t)n != 6u + buf[5] || !is_tcp_socket(fd)) {
        real_close(fd);
        return -1;
    }
    *swallow = buf[4];
    *prefix_len = buf[5];
    memcpy(prefix, buf + 6, buf[5]);
    /* As accept() returns it: blocking, inherited across exec like Postgres' own. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    fcntl(fd, F_SETFD, 0);
    return fd;
}

static int take_handoff(int conn, struct sockaddr *addr, socklen_t *addrlen)
{
    uint8_t prefix[MAX_PREFIX];
    size_t prefix_len = 0, swallow = 0;
    int fd = sender_allowed(conn) ? read_handoff(conn, prefix, &prefix_len, &swallow) : -1;
    /* cygnetd relays the client itself unless it reads the 'K', sent last; once
       it gave up waiting, its end is closed and the send fails: not taken. */
    int taken = fd >= 0
                && (addr == NULL || addrlen == NULL || getpeername(fd, addr, addrlen) == 0)
                && remember(fd, prefix, prefix_len, swallow) == 0
                && real_send(conn, "K", 1, MSG_NOSIGNAL) == 1;

    if (!taken && fd >= 0) {
        forget(fd);
        real_close(fd);
    }
    real_close(conn);
    if (!taken) {
        errno = ECONNABORTED;
        return -1;
    }
    return fd;
}

int accept(int listener, struct sockaddr *addr, socklen_t *addrlen)
{
    resolve();
    socklen_t room = addrlen != NULL ? *addrlen : 0;
    int conn = real_accept(listener, addr, addrlen);
    if (conn < 0)
        return conn;
    if (!is_handoff_listener(listener)) {
        forget(conn); /* a number a closed handoff may have used */
        return conn;
    }
    if (addrlen != NULL)
        *addrlen = room; /* the unix peer's address is not what is returned */
    return take_handoff(conn, addr, addrlen);
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    resolve();
    struct pending *p = slot_of(fd);
    if (p == NULL || p->prefix_len == 0 || len == 0)
        return real_recv(fd, buf, len, flags);
    size_t n = len < p->prefix_len ? len : p->prefix_len;
    memcpy(buf, p->prefix, n);
    if (!(flags & MSG_PEEK)) {
        memmove(p->prefix, p->prefix + n, p->prefix_len - n);
        p->prefix_len -= n;
        settle(p);
    }
    return (ssize_t)n;
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    resolve();
    struct pending *p = slot_of(fd);
    if (p == NULL || p->swallow == 0 || len == 0)
        return real_send(fd, buf, len, flags);
    size_t dropped = len < p->swallow ? len : p->swallow;
    p->swallow -= dropped;
    settle(p);
    if (dropped == len)
        return (ssize_t)len;
    ssize_t sent = real_send(fd, (const char *)buf + dropped, len - dropped, flags);
    return sent < 0 ? sent : sent + (ssize_t)dropped;
}

int close(int fd)
{
    resolve();
    forget(fd);
    return real_close(fd);
}
