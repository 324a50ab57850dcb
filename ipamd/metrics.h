/* ipamd's Prometheus metrics: what the transport counts as it serves, and
 * the rendering of those counts with the pools' gauges. Not locked here: the
 * server holds its loop lock while it updates and while a scrape renders. */
#ifndef IPAMD_METRICS_H
#define IPAMD_METRICS_H

#include <grpc/status.h>
#include <stdbool.h>
#include <stddef.h>

#include "ipam/metrics.h"
#include "state.h"

#define GRPC_CODES 17

struct srv_metrics {
    size_t nmethods;
    uint64_t (*handled)[GRPC_CODES]; /* [method][code] */
    struct ipam_hist *latency;       /* [method] */
    uint64_t unknown_methods;
    struct ipam_hist commit_seconds, batch_size;
    uint64_t commit_failures, expired;
};

struct srv_gauges {
    size_t watch_streams, health_streams, reflection_streams;
    bool serving;
};

int srv_metrics_init(struct srv_metrics *m, size_t nmethods);
void srv_metrics_free(struct srv_metrics *m);
void srv_metrics_rpc(struct srv_metrics *m, size_t method, grpc_status_code code, double seconds);
void srv_metrics_render(const struct srv_metrics *m, const struct state *st,
                        const struct srv_gauges *g, struct ipam_mbuf *b);

#endif
