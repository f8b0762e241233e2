/* The endpoint's data path: one thread and one epoll set move the bytes of
 * every routed Postgres connection, without Python and without the GIL. */
#ifndef CYGNET_RELAY_CORE_H
#define CYGNET_RELAY_CORE_H

#include <stdint.h>

struct cyg_relay_stats {
    uint64_t active;   /* pairs being relayed now */
    uint64_t total;    /* pairs ever added */
    uint64_t up;       /* bytes client -> server */
    uint64_t down;     /* bytes server -> client */
};

/* Hands two connected, non-blocking sockets to the relay thread (started on
 * first use), which closes both when either side is done. Returns 0, or an
 * errno value; on failure the caller still owns both descriptors. */
int cyg_relay_add(int client_fd, int server_fd);

void cyg_relay_stats(struct cyg_relay_stats *out);

#endif
