/* The gRPC transport: one thread drives the completion queue, drains every
 * ready call, applies writes, commits them in one transaction, then answers.
 *
 * server_create binds every listen address (failing with a message naming
 * the address) and starts serving; server_run returns once a stop was
 * requested and every call has finished or been cancelled after a grace
 * period. server_request_stop is the only function safe to call from another
 * thread. */
#ifndef IPAMD_SERVER_H
#define IPAMD_SERVER_H

#include <stddef.h>

#include "state.h"

struct server;

struct server *server_create(struct state *st, const char *const *listen, size_t nlisten,
                             char *err, size_t errlen);
void server_run(struct server *srv);
void server_request_stop(struct server *srv);
void server_destroy(struct server *srv);

#endif
