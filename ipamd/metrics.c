/* ipamd's metrics; names follow Prometheus conventions and, for the gRPC
 * ones, go-grpc-prometheus's labels (grpc_service, grpc_method, grpc_code). */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

static const char *const code_names[GRPC_CODES] = {
    "OK",           "CANCELLED",          "UNKNOWN",        "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND",     "ALREADY_EXISTS", "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",          "UNAVAILABLE",    "DATA_LOSS",
    "UNAUTHENTICATED"};

int srv_metrics_init(struct srv_metrics *m, size_t nmethods)
{
    *m = (struct srv_metrics){.nmethods = nmethods};
    m->handled = calloc(nmethods, sizeof(*m->handled));
    m->latency = calloc(nmethods, sizeof(*m->latency));
    if (!m->handled || !m->latency) {
        srv_metrics_free(m);
        return -1;
    }
    for (size_t i = 0; i < nmethods; i++)
        ipam_hist_init(&m->latency[i], ipam_latency_bounds, ipam_latency_nbounds);
    ipam_hist_init(&m->commit_seconds, ipam_latency_bounds, ipam_latency_nbounds);
    ipam_hist_init(&m->batch_size, ipam_size_bounds, ipam_size_nbounds);
    return 0;
}

void srv_metrics_free(struct srv_metrics *m)
{
    free(m->handled);
    free(m->latency);
    m->handled = NULL;
    m->latency = NULL;
}

void srv_metrics_rpc(struct srv_metrics *m, size_t method, grpc_status_code code, double seconds)
{
    if (method >= m->nmethods) {
        m->unknown_methods++;
        return;
    }
    m->handled[method][(unsigned)code < GRPC_CODES ? code : GRPC_STATUS_UNKNOWN]++;
    ipam_hist_observe(&m->latency[method], seconds);
}

/* `grpc_service="ipam.v1.Ipam",grpc_method="Allocate"` from "/ipam.v1.Ipam/Allocate". */
static void method_labels(const char *path, char *buf, size_t len)
{
    const char *slash = strrchr(path, '/');
    snprintf(buf, len, "grpc_service=\"%.*s\",grpc_method=\"%s\"", (int)(slash - path - 1),
             path + 1, slash + 1);
}

static void pool_gauges(const struct state *st, struct ipam_mbuf *b)
{
    static const struct {
        const char *name, *help;
    } g[] = {
        {"ipamd_pool_addresses", "Addresses a pool can hand out, by family."},
        {"ipamd_pool_addresses_used", "Addresses of a pool that leases hold, by family."},
        {"ipamd_pool_addresses_free", "Addresses of a pool still free, by family."},
    };
    static const char *const fam[2] = {"ipv4", "ipv6"};
    for (size_t k = 0; k < 3; k++) {
        ipam_metric_head(b, g[k].name, "gauge", g[k].help);
        for (const struct pool *p = st_pool_first(st); p; p = st_pool_next(p)) {
            struct pool_stats ps;
            st_pool_stats(p, &ps);
            for (int f = 0; f < 2; f++) {
                ipam_u128 v = k == 0 ? ps.total[f] : k == 1 ? ps.used[f] : ps.total[f] - ps.used[f];
                char num[IPAM_U128_STRLEN];
                ipam_mbuf_printf(b, "%s{pool=\"", g[k].name);
                ipam_mbuf_label(b, p->name);
                ipam_mbuf_printf(b, "\",family=\"%s\"} %s\n", fam[f], ipam_u128_format(v, num));
            }
        }
    }
    ipam_metric_head(b, "ipamd_pool_leases", "gauge", "Leases taken from a pool.");
    for (const struct pool *p = st_pool_first(st); p; p = st_pool_next(p)) {
        ipam_mbuf_printf(b, "ipamd_pool_leases{pool=\"");
        ipam_mbuf_label(b, p->name);
        ipam_mbuf_printf(b, "\"} %zu\n", p->nleases);
    }
}

void srv_metrics_render(const struct srv_metrics *m, const struct state *st,
                        const struct srv_gauges *g, struct ipam_mbuf *b)
{
    char labels[160];

    ipam_metric_head(b, "ipamd_build_info", "gauge", "ipamd's version.");
    ipam_mbuf_printf(b, "ipamd_build_info{version=\"%s\"} 1\n", IPAMD_VERSION);
    ipam_metric_head(b, "ipamd_serving", "gauge",
                     "1 while the health service answers SERVING, 0 while stopping.");
    ipam_mbuf_printf(b, "ipamd_serving %d\n", g->serving ? 1 : 0);
    ipam_metric_head(b, "ipamd_revision", "gauge", "The store's revision.");
    ipam_mbuf_printf(b, "ipamd_revision %llu\n", (unsigned long long)st_revision(st));
    ipam_metric_head(b, "ipamd_leases", "gauge", "Leases held, static reservations included.");
    ipam_mbuf_printf(b, "ipamd_leases %zu\n", st_lease_count(st));
    pool_gauges(st, b);

    ipam_metric_head(b, "ipamd_grpc_server_handled_total", "counter",
                     "Unary RPCs answered, by method and gRPC status code.");
    for (size_t i = 0; i < m->nmethods; i++) {
        if (api_methods[i].kind != API_READ && api_methods[i].kind != API_WRITE)
            continue;
        method_labels(api_methods[i].path, labels, sizeof(labels));
        for (int c = 0; c < GRPC_CODES; c++)
            if (m->handled[i][c] || c == 0)
                ipam_mbuf_printf(b, "ipamd_grpc_server_handled_total{%s,grpc_code=\"%s\"} %llu\n",
                                 labels, code_names[c], (unsigned long long)m->handled[i][c]);
    }
    ipam_metric_head(b, "ipamd_grpc_server_unknown_method_total", "counter",
                     "Calls of methods ipamd does not serve (answered UNIMPLEMENTED).");
    ipam_mbuf_printf(b, "ipamd_grpc_server_unknown_method_total %llu\n",
                     (unsigned long long)m->unknown_methods);
    ipam_metric_head(b, "ipamd_grpc_server_handling_seconds", "histogram",
                     "Time from a unary RPC's arrival to its answer, commit included.");
    for (size_t i = 0; i < m->nmethods; i++) {
        if (api_methods[i].kind != API_READ && api_methods[i].kind != API_WRITE)
            continue;
        method_labels(api_methods[i].path, labels, sizeof(labels));
        ipam_hist_write(b, "ipamd_grpc_server_handling_seconds", labels, &m->latency[i]);
    }
    ipam_metric_head(b, "ipamd_watch_streams", "gauge", "Streams open, by kind.");
    ipam_mbuf_printf(b, "ipamd_watch_streams{kind=\"watch\"} %zu\n", g->watch_streams);
    ipam_mbuf_printf(b, "ipamd_watch_streams{kind=\"health\"} %zu\n", g->health_streams);
    ipam_mbuf_printf(b, "ipamd_watch_streams{kind=\"reflection\"} %zu\n", g->reflection_streams);

    ipam_metric_head(b, "ipamd_leases_expired_total", "counter",
                     "Leases reclaimed because their TTL ran out.");
    ipam_mbuf_printf(b, "ipamd_leases_expired_total %llu\n", (unsigned long long)m->expired);
    ipam_metric_head(b, "ipamd_store_commit_seconds", "histogram",
                     "Duration of a store transaction (write and fsync).");
    ipam_hist_write(b, "ipamd_store_commit_seconds", "", &m->commit_seconds);
    ipam_metric_head(b, "ipamd_store_commit_batch_size", "histogram",
                     "Write calls answered after one store transaction (refused ones included).");
    ipam_hist_write(b, "ipamd_store_commit_batch_size", "", &m->batch_size);
    ipam_metric_head(b, "ipamd_store_commit_failures_total", "counter",
                     "Store transactions that failed (their writes were answered UNAVAILABLE).");
    ipam_mbuf_printf(b, "ipamd_store_commit_failures_total %llu\n",
                     (unsigned long long)m->commit_failures);
}
