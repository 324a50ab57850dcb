/* The gRPC transport: one thread drives the completion queue, drains every
 * ready call, applies writes, commits them in one transaction, then answers.
 *
 * server_check validates the options without binding anything: every TCP
 * listen address resolves to loopback only (unless allow_remote), the TLS
 * files are readable and come as a set. server_create checks again, binds
 * every listen address (failing with a message naming the address) and
 * starts serving; server_run returns once a stop was requested and every
 * call has finished or been cancelled after a grace period.
 * server_request_stop is the only function safe to call from another
 * thread. Errors are written to err as one line. */
#ifndef IPAMD_SERVER_H
#define IPAMD_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "state.h"

#define SERVER_DEFAULT_SOCKET_MODE 0660u
#define SERVER_DEFAULT_MAX_WATCHERS 1024u

struct server_opts {
    const char *const *listen; /* "host:port", "unix:/path", "unix-abstract:name" */
    size_t nlisten;
    unsigned socket_mode; /* permission bits of Unix socket files (at most 0777) */
    bool allow_remote;    /* TCP listeners may be reachable from other hosts */
    /* PEM files; with tls_cert and tls_key every TCP listener is TLS only,
     * with tls_client_ca too clients must present a certificate it signed.
     * Unix sockets stay plaintext: their file mode is their access control. */
    const char *tls_cert, *tls_key, *tls_client_ca;
    size_t max_watchers; /* Watch and Health/Watch streams open at once */
    const char *metrics_listen; /* host:port of the Prometheus endpoint, or NULL */
};

int server_check(const struct server_opts *o, char *err, size_t errlen);
struct server *server_create(struct state *st, const struct server_opts *o, char *err,
                             size_t errlen);
void server_run(struct server *srv);
void server_request_stop(struct server *srv);
void server_destroy(struct server *srv);

#endif
