/* C test of relay_core.c under AddressSanitizer and UBSan
 * (tests/unit/test_endpoint_relay_c.py): bytes both ways, half close, many pairs. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "relay_core.h"

#define SIZE (4 << 20)

static int failed;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);         \
            failed++;                                                      \
        }                                                                  \
    } while (0)

struct sender {
    int fd;
    size_t size;
    unsigned char seed;
};

static void *send_all(void *arg)
{
    struct sender *s = arg;
    unsigned char *buf = malloc(s->size);
    for (size_t i = 0; i < s->size; i++)
        buf[i] = (unsigned char)(i * 31 + s->seed);
    size_t off = 0;
    while (off < s->size) {
        ssize_t n = send(s->fd, buf + off, s->size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(s->fd, SHUT_WR);
    free(buf);
    return NULL;
}

/* Reads to end of file; 1 when the bytes are the sender's pattern. */
static int receive_pattern(int fd, size_t size, unsigned char seed)
{
    unsigned char buf[65536];
    size_t got = 0;
    int ok = 1;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != (unsigned char)((got + (size_t)i) * 31 + seed))
                ok = 0;
        got += (size_t)n;
    }
    return ok && got == size;
}

/* client <-> [relay] <-> server; fds[0] is the client's end, fds[1] the server's. */
static void relayed(int fds[2])
{
    int a[2], b[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, b) < 0)
        abort();
    fcntl(a[1], F_SETFL, O_NONBLOCK);
    fcntl(b[0], F_SETFL, O_NONBLOCK);
    CHECK(cyg_relay_add(a[1], b[0]) == 0);
    fds[0] = a[0];
    fds[1] = b[1];
}

static void wait_idle(void)
{
    struct cyg_relay_stats st;
    for (int i = 0; i < 1000; i++) {
        cyg_relay_stats(&st);
        if (st.active == 0)
            return;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    CHECK(st.active == 0);
}

static void test_both_ways(void)
{
    int fds[2];
    relayed(fds);
    pthread_t up_thread, down_thread;
    struct sender up = {fds[0], SIZE, 1}, down = {fds[1], SIZE / 2, 7};
    pthread_create(&up_thread, NULL, send_all, &up);
    pthread_create(&down_thread, NULL, send_all, &down);
    CHECK(receive_pattern(fds[1], SIZE, 1));
    CHECK(receive_pattern(fds[0], SIZE / 2, 7));
    pthread_join(up_thread, NULL);
    pthread_join(down_thread, NULL);
    close(fds[0]);
    close(fds[1]);
    wait_idle();
}

static void test_many_pairs(void)
{
    enum { N = 100 };
    int fds[N][2];
    for (int i = 0; i < N; i++)
        relayed(fds[i]);
    for (int i = 0; i < N; i++)
        CHECK(send(fds[i][0], &i, sizeof i, 0) == sizeof i);
    for (int i = 0; i < N; i++) {
        int got = -1;
        CHECK(recv(fds[i][1], &got, sizeof got, MSG_WAITALL) == sizeof got && got == i);
        close(fds[i][1]);  /* the server hangs up: the client sees end of file */
        CHECK(recv(fds[i][0], &got, sizeof got, 0) == 0);
        close(fds[i][0]);
    }
    wait_idle();
    struct cyg_relay_stats st;
    cyg_relay_stats(&st);
    CHECK(st.total == N + 1);
}

int main(void)
{
    test_both_ways();
    test_many_pairs();
    printf("OK: %d failed checks\n", failed);
    return failed != 0;
}
