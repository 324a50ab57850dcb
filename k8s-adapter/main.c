/* k8s-adapter: gives LoadBalancer Services their addresses from ipamd. */
#include <getopt.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ametrics.h"
#include "controller.h"
#include "ipam/log.h"
#include "ipam/metrics.h"
#include "ipam/opttab.h"
#include "kube.h"
#include "kubeconfig.h"

static const struct ipam_opt options[] = {
    {"ipamd", "ADDR", "ipamd to use (default unix:/run/ipamd/ipamd.sock)"},
    {"kubeconfig", "FILE", "kubeconfig to use (default $KUBECONFIG, else in-cluster)"},
    {"context", "NAME", "kubeconfig context (default its current-context)"},
    {"server", "URL", "API server URL without authentication, e.g. kubectl proxy's"},
    {"resync", "SECONDS", "reconcile every Service this often (default 300; 0: never)"},
    {"owner-prefix", "PREFIX", "lease owners are PREFIX/<namespace>/<name> (default k8s)"},
    {"write-status", NULL, "also set status.loadBalancer.ingress"},
    {"ipamd-tls-ca", "FILE", "TLS to a host:port ipamd: CAs that verify it"},
    {"ipamd-tls-cert", "FILE", "client certificate for ipamd's --tls-client-ca"},
    {"ipamd-tls-key", "FILE", "private key of --ipamd-tls-cert"},
    {"ipamd-tls-server-name", "NAME", "name ipamd's certificate carries (default: ADDR's host)"},
    {"log-level", "LEVEL", "debug, info, warn or error (default info)"},
    {"log-format", "FORMAT", "text or json: one line per event either way (default text)"},
    {"metrics-listen", "ADDR",
     "host:port to serve Prometheus metrics on at /metrics (default: off)"},
    {"version", NULL, "print the version and exit"},
    {"help", NULL, "print this help and exit"},
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: k8s-adapter [OPTION]...\n\nGives Services of type LoadBalancer "
               "their addresses from ipamd (kube-vip-cloud-provider compatible).\n\n");
    ipam_opt_usage(f, options, NOPTIONS, 28);
    fprintf(f, "\nEnvironment: KUBEVIP_CONFIG_MAP (kubevip), KUBEVIP_NAMESPACE (kube-system),\n"
               "KUBEVIP_ENABLE_LOADBALANCERCLASS (false), KUBEVIP_CUSTOM_LOADBALANCERCLASS_NAME\n"
               "(kube-vip.io/kube-vip-class).\n");
}

/* Go's strconv.ParseBool, which kube-vip-cloud-provider uses. */
static int parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < 6; i++) {
        if (!strcmp(s, t[i])) {
            *out = true;
            return 0;
        }
        if (!strcmp(s, f[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

static volatile sig_atomic_t stop;

struct sigctx {
    sigset_t set;
    struct ctl *ctl;
};

static void *signal_thread(void *arg)
{
    struct sigctx *sc = arg;
    int sig;
    if (sigwait(&sc->set, &sig) == 0) {
        stop = 1;
        ctl_wakeup(sc->ctl);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct ctl_opts o = {
        .ipamd = "unix:/run/ipamd/ipamd.sock",
        .owner_prefix = "k8s",
        .resync_seconds = 300,
    };
    const char *kubeconfig = NULL, *context = NULL, *server = NULL, *metrics = NULL;
    ipam_tls tls = {NULL, NULL, NULL, NULL};
    struct option lo[NOPTIONS + 1];
    ipam_opt_getopt(options, NOPTIONS, lo);
    int c, idx;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", lo, &idx)) != -1) {
        if (c == '?' || c == ':') {
            fprintf(stderr, "k8s-adapter: unknown option or missing value: `%s'\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        const char *name = options[c - IPAM_OPT_BASE].name;
        if (!strcmp(name, "ipamd")) {
            o.ipamd = optarg;
        } else if (!strcmp(name, "kubeconfig")) {
            kubeconfig = optarg;
        } else if (!strcmp(name, "context")) {
            context = optarg;
        } else if (!strcmp(name, "server")) {
            server = optarg;
        } else if (!strcmp(name, "resync")) {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!optarg[0] || *end || v < 0 || v > 86400) {
                fprintf(stderr, "k8s-adapter: --resync `%s' is not 0 to 86400 seconds\n", optarg);
                return 2;
            }
            o.resync_seconds = (int)v;
        } else if (!strcmp(name, "owner-prefix")) {
            if (!optarg[0] || strchr(optarg, '/') || strchr(optarg, ' ')) {
                fprintf(stderr, "k8s-adapter: --owner-prefix `%s' must be a word without '/'\n",
                        optarg);
                return 2;
            }
            o.owner_prefix = optarg;
        } else if (!strcmp(name, "write-status")) {
            o.write_status = true;
        } else if (!strcmp(name, "ipamd-tls-ca")) {
            tls.ca_file = optarg;
        } else if (!strcmp(name, "ipamd-tls-cert")) {
            tls.cert_file = optarg;
        } else if (!strcmp(name, "ipamd-tls-key")) {
            tls.key_file = optarg;
        } else if (!strcmp(name, "ipamd-tls-server-name")) {
            tls.server_name = optarg;
        } else if (!strcmp(name, "log-level")) {
            if (log_parse_level(optarg, &log_threshold) != 0) {
                fprintf(stderr,
                        "k8s-adapter: --log-level `%s' is not debug, info, warn or error\n",
                        optarg);
                return 2;
            }
        } else if (!strcmp(name, "log-format")) {
            if (log_parse_format(optarg, &log_format) != 0) {
                fprintf(stderr, "k8s-adapter: --log-format `%s' is not text or json\n", optarg);
                return 2;
            }
        } else if (!strcmp(name, "metrics-listen")) {
            metrics = optarg;
        } else if (!strcmp(name, "version")) {
            printf("k8s-adapter %s\n", ADAPTER_VERSION);
            return 0;
        } else {
            usage(stdout);
            return 0;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "k8s-adapter: unexpected argument `%s'\n", argv[optind]);
        return 2;
    }
    if (server && (kubeconfig || context)) {
        fprintf(stderr, "k8s-adapter: --server excludes --kubeconfig and --context\n");
        return 2;
    }
    bool use_tls = tls.ca_file || tls.cert_file || tls.key_file || tls.server_name;
    if (use_tls && (!strncmp(o.ipamd, "unix:", 5) || !strncmp(o.ipamd, "unix-abstract:", 14))) {
        fprintf(stderr,
                "k8s-adapter: --ipamd-tls-* are for a host:port ipamd; its Unix sockets (`%s') "
                "are plaintext\n",
                o.ipamd);
        return 2;
    }
    if (!tls.cert_file != !tls.key_file) {
        fprintf(stderr, "k8s-adapter: --ipamd-tls-cert and --ipamd-tls-key go together\n");
        return 2;
    }
    o.cm_name = env_or("KUBEVIP_CONFIG_MAP", "kubevip");
    o.cm_namespace = env_or("KUBEVIP_NAMESPACE", "kube-system");
    o.svc.class_name =
        env_or("KUBEVIP_CUSTOM_LOADBALANCERCLASS_NAME", "kube-vip.io/kube-vip-class");
    const char *cls = getenv("KUBEVIP_ENABLE_LOADBALANCERCLASS");
    if (cls && cls[0] && parse_bool(cls, &o.svc.class_mode) != 0) {
        fprintf(stderr,
                "k8s-adapter: KUBEVIP_ENABLE_LOADBALANCERCLASS `%s' is not a boolean "
                "(true/false, 1/0, t/f)\n",
                cls);
        return 2;
    }

    char err[1024];
    struct kube_config cfg = {0};
    int rc;

    if (server)
        rc = kube_config_server(&cfg, server, err, sizeof(err));
    else if (kubeconfig || context || getenv("KUBECONFIG"))
        rc = kube_config_load_kubeconfig(&cfg, kubeconfig, context, err, sizeof(err));
    else
        rc = kube_config_in_cluster(&cfg, err, sizeof(err));
    if (rc != 0) {
        log_error("%s", err);
        return 1;
    }

    struct sigctx sc;
    sigemptyset(&sc.set);
    sigaddset(&sc.set, SIGTERM);
    sigaddset(&sc.set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sc.set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct kube *k = kube_new(&cfg, err, sizeof(err));
    kube_config_free(&cfg);
    if (!k) {
        log_error("%s", err);
        return 1;
    }
    kube_set_observer(k, am_api, NULL);
    struct ipam_metrics_server *http = NULL;
    if (metrics) {
        char bound[80];
        http = ipam_metrics_start(metrics, am_render, NULL, bound, sizeof(bound), err,
                                  sizeof(err));
        if (!http) {
            log_error("%s", err);
            kube_free(k);
            return 1;
        }
        log_info("metrics on http://%s/metrics", bound);
    }
    grpc_init();
    if (use_tls)
        o.ipamd_tls = &tls;
    char *msg = NULL;
    struct ctl *ctl = ctl_new(&o, k, &msg);
    if (!ctl) {
        log_error("%s", msg ? msg : "out of memory");
        free(msg);
        ipam_metrics_stop(http);
        kube_free(k);
        grpc_shutdown();
        return 1;
    }
    sc.ctl = ctl;
    pthread_t th;
    if (pthread_create(&th, NULL, signal_thread, &sc) != 0) {
        log_error("cannot start the signal thread");
        rc = 1;
    } else {
        log_info("k8s-adapter %s: ipamd %s%s, ConfigMap %s/%s%s%s", ADAPTER_VERSION,
                o.ipamd, use_tls ? " (TLS)" : "", o.cm_namespace, o.cm_name,
                o.svc.class_mode ? ", class " : "", o.svc.class_mode ? o.svc.class_name : "");
        rc = ctl_run(ctl, &stop);
        pthread_kill(th, SIGTERM); /* Unblocks the signal thread if we stopped on our own. */
        pthread_join(th, NULL);
    }
    ctl_free(ctl);
    ipam_metrics_stop(http);
    kube_free(k);
    grpc_shutdown();
    return rc;
}
