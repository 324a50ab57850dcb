/* Prometheus metrics: text exposition helpers and a small HTTP endpoint.
 *
 * The endpoint serves GET/HEAD /metrics (text format 0.0.4) from its own
 * thread: each scrape calls the render function, which must take whatever
 * lock its data needs. Every other path is 404, every other method 405.
 * Histograms and buffers here are plain data, with no locking of their own. */
#ifndef IPAM_METRICS_H
#define IPAM_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growing text buffer; on allocation failure it stops growing and
 * remembers it (the scrape then fails with 500). */
struct ipam_mbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

void ipam_mbuf_printf(struct ipam_mbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s as the inside of a label value: \ " and newline escaped. */
void ipam_mbuf_label(struct ipam_mbuf *b, const char *s);
void ipam_mbuf_free(struct ipam_mbuf *b);

/* "# HELP name help" and "# TYPE name type". */
void ipam_metric_head(struct ipam_mbuf *b, const char *name, const char *type, const char *help);

#define IPAM_HIST_MAX_BUCKETS 24

/* A histogram with fixed upper bounds (ascending, +Inf implied). */
struct ipam_hist {
    const double *bounds;
    size_t nbounds;
    uint64_t counts[IPAM_HIST_MAX_BUCKETS]; /* not cumulative */
    uint64_t count;
    double sum;
};

/* Bounds for latencies in seconds (100 us to 10 s) and for sizes (1 to 4096). */
extern const double ipam_latency_bounds[];
extern const size_t ipam_latency_nbounds;
extern const double ipam_size_bounds[];
extern const size_t ipam_size_nbounds;

void ipam_hist_init(struct ipam_hist *h, const double *bounds, size_t nbounds);
void ipam_hist_observe(struct ipam_hist *h, double v);
/* Writes name_bucket/_sum/_count; labels is "" or `a="b"` (already escaped). */
void ipam_hist_write(struct ipam_mbuf *b, const char *name, const char *labels,
                     const struct ipam_hist *h);

/* process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds and
 * process_start_time_seconds, from /proc/self. */
void ipam_metrics_process(struct ipam_mbuf *b);

typedef void (*ipam_metrics_render)(void *ctx, struct ipam_mbuf *out);

struct ipam_metrics_server;

/* Listens on addr ("host:port", "[v6]:port"; port 0 picks one) and serves
 * /metrics. Returns NULL with a message naming addr in err. The bound
 * address, as "host:port", is written to bound (bound_len bytes) if given. */
struct ipam_metrics_server *ipam_metrics_start(const char *addr, ipam_metrics_render fn, void *ctx,
                                               char *bound, size_t bound_len, char *err,
                                               size_t errlen);
void ipam_metrics_stop(struct ipam_metrics_server *m);

#endif
