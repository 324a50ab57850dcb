/* ipamd: the IP address management daemon. */
#include <errno.h>
#include <getopt.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "server.h"
#include "state.h"

#define DEFAULT_LISTEN "127.0.0.1:50051"
#define DEFAULT_DATA_DIR "./ipamd-data"
#define EVENT_RING 65536
#define MAX_LISTEN 16

struct opts {
    const char *listen[MAX_LISTEN];
    size_t nlisten;
    const char *data_dir;
    const char *config;
};

/* Options are declared once; getopt's table and the usage text derive from it. */
static const struct {
    const char *name;
    const char *arg;
    const char *help;
} options[] = {
    {"listen", "ADDR", "host:port or unix:/path to serve on; repeatable (default " DEFAULT_LISTEN ")"},
    {"data-dir", "DIR", "where the database lives (default " DEFAULT_DATA_DIR ")"},
    {"config", "FILE", "pools file applied at start (pools listed are created or updated)"},
    {"log-level", "LEVEL", "debug, info, warn or error (default info)"},
    {"version", NULL, "print the version and exit"},
    {"help", NULL, "print this help and exit"},
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: ipamd [OPTION]...\n\nServes IP address pools and leases over gRPC.\n\n");
    for (size_t i = 0; i < NOPTIONS; i++) {
        char left[40];
        snprintf(left, sizeof(left), "--%s%s%s", options[i].name, options[i].arg ? " " : "",
                 options[i].arg ? options[i].arg : "");
        fprintf(f, "  %-22s %s\n", left, options[i].help);
    }
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    struct option lo[NOPTIONS + 1];
    memset(lo, 0, sizeof(lo));
    for (size_t i = 0; i < NOPTIONS; i++) {
        lo[i].name = options[i].name;
        lo[i].has_arg = options[i].arg ? required_argument : no_argument;
        lo[i].val = 256 + (int)i;
    }
    int c, idx;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", lo, &idx)) != -1) {
        if (c == '?' || c == ':') {
            fprintf(stderr, "ipamd: unknown option or missing value: `%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        const char *name = options[c - 256].name;
        if (!strcmp(name, "listen")) {
            if (o->nlisten == MAX_LISTEN) {
                fprintf(stderr, "ipamd: at most %d --listen addresses\n", MAX_LISTEN);
                return 2;
            }
            o->listen[o->nlisten++] = optarg;
        } else if (!strcmp(name, "data-dir")) {
            o->data_dir = optarg;
        } else if (!strcmp(name, "config")) {
            o->config = optarg;
        } else if (!strcmp(name, "log-level")) {
            static const char *const lv[] = {"debug", "info", "warn", "error"};
            size_t k = 0;
            while (k < 4 && strcmp(lv[k], optarg) != 0)
                k++;
            if (k == 4) {
                fprintf(stderr, "ipamd: --log-level `%s' is not debug, info, warn or error\n",
                        optarg);
                return 2;
            }
            log_threshold = (enum log_level)k;
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
    if (!o->nlisten)
        o->listen[o->nlisten++] = DEFAULT_LISTEN;
    if (!o->data_dir)
        o->data_dir = DEFAULT_DATA_DIR;
    return -1;
}

/* Applies the pools file and commits it. */
static int apply_config(struct state *st, const char *path)
{
    struct config c;
    char err[600];
    if (config_load(path, &c, err, sizeof(err)) != 0) {
        log_error("%s", err);
        return -1;
    }
    int rc = 0;
    size_t changed = 0;
    for (size_t i = 0; i < c.n && rc == 0; i++) {
        struct ipam_status s;
        struct pool *p;
        bool created, ch;
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
    config_free(&c);
    return rc;
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
    struct opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;

    /* gRPC's threads inherit this mask, so only our thread sees the signals. */
    struct sigctx sc;
    sigemptyset(&sc.set);
    sigaddset(&sc.set, SIGTERM);
    sigaddset(&sc.set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sc.set, NULL);
    signal(SIGPIPE, SIG_IGN);

    grpc_init();
    char err[600];
    struct server *srv = NULL;
    struct state *st = state_open(&store_sqlite, o.data_dir, EVENT_RING, err, sizeof(err));
    rc = 1;
    if (!st) {
        log_error("cannot open the store: %s", err);
        goto out;
    }
    log_info("loaded %zu leases at revision %llu from %s", st_lease_count(st),
             (unsigned long long)st_revision(st), o.data_dir);
    if (o.config && apply_config(st, o.config) != 0)
        goto out;
    srv = server_create(st, o.listen, o.nlisten, err, sizeof(err));
    if (!srv) {
        log_error("%s", err);
        goto out;
    }
    for (size_t i = 0; i < o.nlisten; i++)
        log_info("serving on %s", o.listen[i]);

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
    server_destroy(srv);
    state_close(st);
    grpc_shutdown();
    return rc;
}
