/* ipamd: the IP address management daemon. */
#include <errno.h>
#include <getopt.h>
#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ipam/opttab.h"
#include "ipam/log.h"
#include "server.h"
#include "state.h"

#define DEFAULT_LISTEN "127.0.0.1:50051"
#define DEFAULT_DATA_DIR "./ipamd-data"
#define DEFAULT_WATCH_HISTORY 65536
#define MAX_WATCH_HISTORY 16777216
#define MAX_LISTEN 16
#define MAX_WATCHERS 1000000

struct opts {
    const char *listen[MAX_LISTEN];
    struct server_opts srv;
    const char *data_dir;
    const char *config;
    size_t watch_history;
};

/* Options are declared once; getopt's table and the usage text derive from it. */
static const struct ipam_opt options[] = {
    {"listen", "ADDR",
     "host:port or unix:/path to serve on; repeatable (default " DEFAULT_LISTEN ")"},
    {"data-dir", "DIR", "where the database lives (default " DEFAULT_DATA_DIR ")"},
    {"config", "FILE", "pools file applied at start (pools listed are created or updated)"},
    {"log-level", "LEVEL", "debug, info, warn or error (default info)"},
    {"log-format", "FORMAT", "text or json: one line per event either way (default text)"},
    {"metrics-listen", "ADDR",
     "host:port to serve Prometheus metrics on at /metrics (default: off)"},
    {"socket-mode", "MODE",
     "octal permissions of unix: socket files (default 0660: owner and group)"},
    {"allow-remote", NULL,
     "allow TCP listeners that other hosts can reach (default: loopback addresses only)"},
    {"tls-cert", "FILE", "PEM certificate chain: TCP listeners speak TLS only"},
    {"tls-key", "FILE", "PEM private key of --tls-cert"},
    {"tls-client-ca", "FILE",
     "PEM CA certificates: TCP clients must present a certificate "
     "they signed (mutual TLS)"},
    {"max-watchers", "N", "Watch, Health/Watch and reflection streams open at once (default 1024)"},
    {"watch-history", "N",
     "events held in memory for Watch to replay and for slow watchers (default 65536)"},
    {"version", NULL, "print the version and exit"},
    {"help", NULL, "print this help and exit"},
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: ipamd [OPTION]...\n\nServes IP address pools and leases over gRPC.\n\n");
    ipam_opt_usage(f, options, NOPTIONS, 22);
    fprintf(f, "\nUnix sockets are plaintext; their file mode is their access control.\n");
}

/* An octal permission mode, "0660" or "660". */
static int parse_mode(const char *s, unsigned *mode)
{
    size_t n = strlen(s);
    if (n == 0 || n > 4 || strspn(s, "01234567") != n)
        return -1;
    unsigned long v = strtoul(s, NULL, 8);
    if (v > 0777)
        return -1;
    *mode = (unsigned)v;
    return 0;
}

/* A decimal count from 1 to max. */
static int parse_count(const char *s, size_t max, size_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 9 || strspn(s, "0123456789") != n)
        return -1;
    unsigned long v = strtoul(s, NULL, 10);
    if (v < 1 || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    struct option lo[NOPTIONS + 1];
    ipam_opt_getopt(options, NOPTIONS, lo);
    int c, idx;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", lo, &idx)) != -1) {
        if (c == '?' || c == ':') {
            fprintf(stderr, "ipamd: unknown option or missing value: `%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        const char *name = options[c - IPAM_OPT_BASE].name;
        if (!strcmp(name, "listen")) {
            if (o->srv.nlisten == MAX_LISTEN) {
                fprintf(stderr, "ipamd: at most %d --listen addresses\n", MAX_LISTEN);
                return 2;
            }
            o->listen[o->srv.nlisten++] = optarg;
        } else if (!strcmp(name, "data-dir")) {
            o->data_dir = optarg;
        } else if (!strcmp(name, "config")) {
            o->config = optarg;
        } else if (!strcmp(name, "log-level")) {
            if (log_parse_level(optarg, &log_threshold) != 0) {
                fprintf(stderr, "ipamd: --log-level `%s' is not debug, info, warn or error\n",
                        optarg);
                return 2;
            }
        } else if (!strcmp(name, "log-format")) {
            if (log_parse_format(optarg, &log_format) != 0) {
                fprintf(stderr, "ipamd: --log-format `%s' is not text or json\n", optarg);
                return 2;
            }
        } else if (!strcmp(name, "metrics-listen")) {
            o->srv.metrics_listen = optarg;
        } else if (!strcmp(name, "socket-mode")) {
            if (parse_mode(optarg, &o->srv.socket_mode) != 0) {
                fprintf(stderr,
                        "ipamd: --socket-mode `%s' is not an octal permission mode (0000 to "
                        "0777, e.g. 0660)\n",
                        optarg);
                return 2;
            }
        } else if (!strcmp(name, "allow-remote")) {
            o->srv.allow_remote = true;
        } else if (!strcmp(name, "tls-cert")) {
            o->srv.tls_cert = optarg;
        } else if (!strcmp(name, "tls-key")) {
            o->srv.tls_key = optarg;
        } else if (!strcmp(name, "tls-client-ca")) {
            o->srv.tls_client_ca = optarg;
        } else if (!strcmp(name, "max-watchers")) {
            if (parse_count(optarg, MAX_WATCHERS, &o->srv.max_watchers) != 0) {
                fprintf(stderr, "ipamd: --max-watchers `%s' is not a number from 1 to %d\n", optarg,
                        MAX_WATCHERS);
                return 2;
            }
        } else if (!strcmp(name, "watch-history")) {
            if (parse_count(optarg, MAX_WATCH_HISTORY, &o->watch_history) != 0) {
                fprintf(stderr, "ipamd: --watch-history `%s' is not a number from 1 to %d\n",
                        optarg, MAX_WATCH_HISTORY);
                return 2;
            }
        } else if (!strcmp(name, "version")) {
            printf("ipamd %s\n", IPAMD_VERSION);
            return 0;
        } else {
            usage(stdout);
            return 0;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ipamd: unexpected argument `%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!o->srv.tls_cert != !o->srv.tls_key) {
        fprintf(stderr, "ipamd: --tls-cert and --tls-key go together\n");
        return 2;
    }
    if (o->srv.tls_client_ca && !o->srv.tls_cert) {
        fprintf(stderr, "ipamd: --tls-client-ca needs --tls-cert and --tls-key\n");
        return 2;
    }
    if (!o->srv.nlisten)
        o->listen[o->srv.nlisten++] = DEFAULT_LISTEN;
    if (!o->data_dir)
        o->data_dir = DEFAULT_DATA_DIR;
    return -1;
}

/* Applies the pools file (read before the store was opened, so a bad file
 * touched nothing) and commits it. */
static int apply_config(struct state *st, const char *path, struct config *cfg)
{
    const struct config c = *cfg;
    char err[600];
    int rc = 0;
    size_t changed = 0;
    for (size_t i = 0; i < c.n && rc == 0; i++) {
        struct ipam_status s;
        struct pool *p;
        bool created = false, ch = false;
        if (st_apply_pool(st, c.pools[i], &p, &created, &ch, &s) != IPAM_OK) {
            log_error("%s:%d: %s", path, c.lines[i], s.msg);
            rc = -1;
        }
        changed += ch;
    }
    if (rc == 0 && st_commit(st, err, sizeof(err)) != 0) {
        log_error("cannot store the pools of %s: %s", path, err);
        rc = -1;
    }
    if (rc == 0)
        log_info("applied %zu pools from %s (%zu changed)", c.n, path, changed);
    return rc;
}

/* gRPC's own messages (a client's failed TLS handshake, say) go to ipamd's
 * log. They concern one connection, so gRPC's errors are warnings here. */
static void grpc_log(gpr_log_func_args *a)
{
    enum log_level lv = a->severity == GPR_LOG_SEVERITY_DEBUG  ? LOG_DEBUG
                        : a->severity == GPR_LOG_SEVERITY_INFO ? LOG_INFO
                                                               : LOG_WARN;
    log_msg(lv, "grpc: %s", a->message);
}

struct sigctx {
    sigset_t set;
    struct server *srv;
};

static void *signal_thread(void *arg)
{
    struct sigctx *c = arg;
    int sig;
    while (sigwait(&c->set, &sig) == 0) {
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            server_request_stop(c->srv);
            break;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct opts o = {.srv = {.socket_mode = SERVER_DEFAULT_SOCKET_MODE,
                             .max_watchers = SERVER_DEFAULT_MAX_WATCHERS},
                     .watch_history = DEFAULT_WATCH_HISTORY};
    o.srv.listen = o.listen;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    char err[600];
    /* Refuse what cannot be served before touching the data directory. */
    if (server_check(&o.srv, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return 1;
    }

    /* gRPC's threads inherit this mask, so only our thread sees the signals. */
    struct sigctx sc;
    sigemptyset(&sc.set);
    sigaddset(&sc.set, SIGTERM);
    sigaddset(&sc.set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sc.set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* A pools file that cannot be read or parsed stops ipamd before the data
     * directory is created or opened. */
    struct config cfg = {0};
    if (o.config && config_load(o.config, &cfg, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return 1;
    }

    gpr_set_log_function(grpc_log);
    grpc_init();
    struct server *srv = NULL;
    struct state *st = state_open(&store_sqlite, o.data_dir, o.watch_history, err, sizeof(err));
    rc = 1;
    if (!st) {
        log_error("cannot open the store: %s", err);
        goto out;
    }
    log_info("loaded %zu leases at revision %llu from %s", st_lease_count(st),
             (unsigned long long)st_revision(st), o.data_dir);
    if (o.config && apply_config(st, o.config, &cfg) != 0)
        goto out;
    srv = server_create(st, &o.srv, err, sizeof(err));
    if (!srv) {
        log_error("%s", err);
        goto out;
    }
    sc.srv = srv;
    pthread_t th;
    if (pthread_create(&th, NULL, signal_thread, &sc) != 0) {
        log_error("cannot start the signal thread: %s", strerror(errno));
        server_request_stop(srv);
        server_run(srv);
        goto out;
    }
    server_run(srv);
    pthread_join(th, NULL);
    rc = 0;
    log_info("stopped at revision %llu", (unsigned long long)st_revision(st));
out:
    config_free(&cfg);
    server_destroy(srv);
    state_close(st);
    grpc_shutdown();
    return rc;
}
