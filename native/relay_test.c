/* C test of relay_core.c under AddressSanitizer and UBSan
 * (tests/unit/test_endpoint_relay_c.py): bytes both ways, half close, many pairs,
 * and pairs whose TLS the relay ends on both sides. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

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

/* One end of a test connection: a socket, read and written through TLS if `ssl`. */
struct end {
    int fd;
    SSL *ssl;
};

static ssize_t end_send(struct end e, const unsigned char *buf, size_t len)
{
    size_t put = 0;
    if (e.ssl != NULL)
        return SSL_write_ex(e.ssl, buf, len, &put) == 1 ? (ssize_t)put : -1;
    return send(e.fd, buf, len, MSG_NOSIGNAL);
}

static ssize_t end_recv(struct end e, unsigned char *buf, size_t len)
{
    size_t got = 0;
    if (e.ssl != NULL)
        return SSL_read_ex(e.ssl, buf, len, &got) == 1 ? (ssize_t)got : 0;
    return recv(e.fd, buf, len, 0);
}

struct sender {
    struct end end;
    size_t size;
    unsigned char seed;
};

/* Sends the sender's pattern, then ends the plain socket's writing half. */
static void *send_all(void *arg)
{
    struct sender *s = arg;
    unsigned char *buf = malloc(s->size);
    for (size_t i = 0; i < s->size; i++)
        buf[i] = (unsigned char)(i * 31 + s->seed);
    size_t off = 0;
    while (off < s->size) {
        ssize_t n = end_send(s->end, buf + off, s->size - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (s->end.ssl == NULL)
        shutdown(s->end.fd, SHUT_WR);
    free(buf);
    return NULL;
}

/* Reads `size` bytes (and, on a plain socket, on to end of file); 1 when they
 * are the sender's pattern and no more. */
static int receive_pattern(struct end e, size_t size, unsigned char seed)
{
    unsigned char buf[65536];
    size_t got = 0;
    int ok = 1;
    while (e.ssl == NULL || got < size) {
        ssize_t n = end_recv(e, buf, sizeof buf);
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
    CHECK(cyg_relay_add(a[1], NULL, b[0], NULL) == 0);
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
    struct sender up = {{fds[0], NULL}, SIZE, 1}, down = {{fds[1], NULL}, SIZE / 2, 7};
    pthread_create(&up_thread, NULL, send_all, &up);
    pthread_create(&down_thread, NULL, send_all, &down);
    CHECK(receive_pattern(down.end, SIZE, 1));  /* the server's end gets the client's bytes */
    CHECK(receive_pattern(up.end, SIZE / 2, 7));
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

/* --- TLS on both sides -------------------------------------------------- */

/* A throwaway self-signed P-256 certificate, and the two contexts. */
static SSL_CTX *server_ctx, *client_ctx;

static SSL_CTX *context(int server)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    /* As native/tls.c sets them up. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_read_ahead(ctx, 1);
    return ctx;
}

static void make_contexts(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"relay-test", -1,
                               -1, 0);
    X509_set_issuer_name(cert, name);
    X509_set_pubkey(cert, key);
    CHECK(key != NULL && X509_sign(cert, key, EVP_sha256()) > 0);
    server_ctx = context(1);
    client_ctx = context(0);
    CHECK(SSL_CTX_use_certificate(server_ctx, cert) == 1);
    CHECK(SSL_CTX_use_PrivateKey(server_ctx, key) == 1);
    X509_free(cert);
    EVP_PKEY_free(key);
}

struct handshake {
    SSL *ssl;
    int ok;
};

static void *shake(void *arg)
{
    struct handshake *h = arg;
    h->ok = SSL_do_handshake(h->ssl) == 1;
    return NULL;
}

static SSL *tls_on(int fd, int server)
{
    SSL *ssl = SSL_new(server ? server_ctx : client_ctx);
    SSL_set_fd(ssl, fd);
    if (server)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    return ssl;
}

/* outer client <-TLS-> [relay: TLS ends | TLS starts] <-TLS-> outer server. */
static void test_tls_both_sides(void)
{
    make_contexts();
    int a[2], b[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, b) < 0)
        abort();
    struct handshake h[4] = {{tls_on(a[0], 0), 0}, {tls_on(a[1], 1), 0},
                             {tls_on(b[0], 0), 0}, {tls_on(b[1], 1), 0}};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, shake, &h[i]);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK(h[i].ok);
    }
    /* Bytes the relay's session already holds when it takes the pair. */
    CHECK(SSL_write(h[0].ssl, "early", 5) == 5);
    char early[5];
    fcntl(a[1], F_SETFL, O_NONBLOCK);
    fcntl(b[0], F_SETFL, O_NONBLOCK);
    CHECK(cyg_relay_add(a[1], h[1].ssl, b[0], h[2].ssl) == 0);
    struct cyg_relay_stats st;
    cyg_relay_stats(&st);
    CHECK(st.tls == 1);
    CHECK(SSL_read(h[3].ssl, early, 5) == 5 && memcmp(early, "early", 5) == 0);

    pthread_t up_thread, down_thread;
    struct end client = {a[0], h[0].ssl}, server = {b[1], h[3].ssl};
    struct sender up = {client, SIZE, 3}, down = {server, SIZE / 2, 9};
    pthread_create(&up_thread, NULL, send_all, &up);
    pthread_create(&down_thread, NULL, send_all, &down);
    CHECK(receive_pattern(server, SIZE, 3));
    CHECK(receive_pattern(client, SIZE / 2, 9));
    pthread_join(up_thread, NULL);
    pthread_join(down_thread, NULL);

    /* The client ends TLS: the server sees the end too. */
    SSL_shutdown(h[0].ssl);
    char rest;
    CHECK(SSL_read(h[3].ssl, &rest, 1) <= 0);
    SSL_free(h[0].ssl);
    SSL_free(h[3].ssl);
    close(a[0]);
    close(b[1]);
    wait_idle();
    cyg_relay_stats(&st);
    CHECK(st.tls == 0);
    SSL_CTX_free(server_ctx);
    SSL_CTX_free(client_ctx);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as in Python; the relay thread blocks it anyway */
    test_both_ways();
    test_many_pairs();
    test_tls_both_sides();
    printf("OK: %d failed checks\n", failed);
    return failed != 0;
}
