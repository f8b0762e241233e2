/* The endpoint's data path: one thread and one epoll set move the bytes of
 * every routed Postgres connection, without Python and without the GIL. */
#ifndef CYGNET_RELAY_CORE_H
#define CYGNET_RELAY_CORE_H

#include <stdint.h>

#include <openssl/ssl.h>

struct cyg_relay_stats {
    uint64_t active;   /* pairs being relayed now */
    uint64_t total;    /* pairs ever added */
    uint64_t up;       /* bytes client -> server */
    uint64_t down;     /* bytes server -> client */
    uint64_t tls;      /* pairs being relayed now with TLS ended here on a side */
};

/* Hands two connected, non-blocking sockets to the relay thread (started on
 * first use), which closes both when either side is done. A side with an SSL
 * session (its handshake done, on that socket) is read and written through it,
 * and the session is freed with the pair; NULL moves the bytes as they are.
 * Returns 0, or an errno value; on failure the caller still owns everything. */
int cyg_relay_add(int client_fd, SSL *client_ssl, int server_fd, SSL *server_ssl);

void cyg_relay_stats(struct cyg_relay_stats *out);

#endif
