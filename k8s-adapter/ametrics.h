/* The adapter's Prometheus metrics: reconciles by result, Kubernetes API
 * requests by verb, resource and code, ipamd calls by method and code, the
 * work queue's depth. One set per process; every function is thread-safe. */
#ifndef K8S_ADAPTER_AMETRICS_H
#define K8S_ADAPTER_AMETRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "ipam/metrics.h"

/* A kube_observer (see kube.h): counts one API request or watch. */
void am_api(void *ctx, const char *method, const char *path_and_query, bool watch, int status);
/* The Kubernetes verb of a request ("get", "list", "watch", "create",
 * "patch", "update", "delete") and its resource ("services/status"). */
void am_classify(const char *method, const char *path_and_query, bool watch, char *verb,
                 size_t verb_len, char *resource, size_t resource_len);
void am_reconcile(const char *result);
void am_ipamd(const char *method, int grpc_code);
void am_queue_depth(size_t n);
/* An ipam_metrics_render. */
void am_render(void *ctx, struct ipam_mbuf *b);

#endif
