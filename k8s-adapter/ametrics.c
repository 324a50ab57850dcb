/* The adapter's metrics: small counter tables under one lock. Their keys
 * come from the adapter's own requests (never from API data), so the tables
 * stay small. */
#include "ametrics.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_LEN 128
#define MAX_KEYS 256

struct counter {
    char key[KEY_LEN]; /* the rendered labels */
    uint64_t n;
};

struct table {
    struct counter c[MAX_KEYS];
    size_t n;
    uint64_t overflow; /* increments past MAX_KEYS distinct keys */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct table api, reconciles, ipamd_calls;
static size_t queue_depth;

static void bump(struct table *t, const char *key)
{
    pthread_mutex_lock(&mu);
    size_t i = 0;
    while (i < t->n && strcmp(t->c[i].key, key) != 0)
        i++;
    if (i == t->n && t->n < MAX_KEYS) {
        snprintf(t->c[i].key, KEY_LEN, "%s", key);
        t->n++;
    }
    if (i < t->n)
        t->c[i].n++;
    else
        t->overflow++;
    pthread_mutex_unlock(&mu);
}

void am_classify(const char *method, const char *path_and_query, bool watch, char *verb,
                 size_t verb_len, char *resource, size_t resource_len)
{
    /* /api/v1/[namespaces/NS/]RESOURCE[/NAME[/SUB]] or /apis/G/V/... */
    char path[512], *seg[8];
    size_t n = 0, skip;
    snprintf(path, sizeof(path), "%s", path_and_query);
    path[strcspn(path, "?")] = '\0';
    for (char *save = NULL, *p = strtok_r(path, "/", &save); p && n < 8;
         p = strtok_r(NULL, "/", &save))
        seg[n++] = p;
    skip = n > 0 && strcmp(seg[0], "apis") == 0 ? 3 : 2;
    if (n >= skip + 2 && strcmp(seg[skip], "namespaces") == 0 && n > skip + 2)
        skip += 2;
    const char *res = n > skip ? seg[skip] : "unknown";
    bool named = n > skip + 1;
    if (n > skip + 2)
        snprintf(resource, resource_len, "%s/%s", res, seg[skip + 2]);
    else
        snprintf(resource, resource_len, "%s", res);

    const char *v = "unknown";
    if (watch)
        v = "watch";
    else if (strcmp(method, "GET") == 0)
        v = named ? "get" : "list";
    else if (strcmp(method, "POST") == 0)
        v = "create";
    else if (strcmp(method, "PATCH") == 0)
        v = "patch";
    else if (strcmp(method, "PUT") == 0)
        v = "update";
    else if (strcmp(method, "DELETE") == 0)
        v = named ? "delete" : "deletecollection";
    snprintf(verb, verb_len, "%s", v);
}

void am_api(void *ctx, const char *method, const char *path_and_query, bool watch, int status)
{
    char verb[24], res[48], code[16], key[KEY_LEN];
    (void)ctx;
    am_classify(method, path_and_query, watch, verb, sizeof(verb), res, sizeof(res));
    if (status > 0)
        snprintf(code, sizeof(code), "%d", status);
    else
        snprintf(code, sizeof(code), "none");
    snprintf(key, sizeof(key), "verb=\"%s\",resource=\"%s\",code=\"%s\"", verb, res, code);
    bump(&api, key);
}

void am_reconcile(const char *result)
{
    char key[KEY_LEN];
    snprintf(key, sizeof(key), "result=\"%s\"", result);
    bump(&reconciles, key);
}

void am_ipamd(const char *method, int grpc_code)
{
    char key[KEY_LEN];
    snprintf(key, sizeof(key), "method=\"%s\",grpc_code=\"%d\"", method, grpc_code);
    bump(&ipamd_calls, key);
}

void am_queue_depth(size_t n)
{
    pthread_mutex_lock(&mu);
    queue_depth = n;
    pthread_mutex_unlock(&mu);
}

static void write_table(struct ipam_mbuf *b, const char *name, const struct table *t)
{
    for (size_t i = 0; i < t->n; i++)
        ipam_mbuf_printf(b, "%s{%s} %llu\n", name, t->c[i].key, (unsigned long long)t->c[i].n);
}

void am_render(void *ctx, struct ipam_mbuf *b)
{
    (void)ctx;
    pthread_mutex_lock(&mu);
    ipam_metric_head(b, "k8s_adapter_build_info", "gauge", "The adapter's version.");
    ipam_mbuf_printf(b, "k8s_adapter_build_info{version=\"%s\"} 1\n", ADAPTER_VERSION);
    ipam_metric_head(b, "k8s_adapter_reconciles_total", "counter",
                     "Service reconciles, by result: done, retry (failed, retried with "
                     "backoff) or wait (waiting for the ConfigMap or the Service).");
    write_table(b, "k8s_adapter_reconciles_total", &reconciles);
    ipam_metric_head(b, "k8s_adapter_api_requests_total", "counter",
                     "Kubernetes API requests by verb, resource and HTTP status (watches "
                     "when they end; code none: no response).");
    write_table(b, "k8s_adapter_api_requests_total", &api);
    ipam_metric_head(b, "k8s_adapter_ipamd_requests_total", "counter",
                     "Calls to ipamd by method and gRPC status code.");
    write_table(b, "k8s_adapter_ipamd_requests_total", &ipamd_calls);
    ipam_metric_head(b, "k8s_adapter_queue_depth", "gauge",
                     "Services waiting to be reconciled, retries included.");
    ipam_mbuf_printf(b, "k8s_adapter_queue_depth %zu\n", queue_depth);
    pthread_mutex_unlock(&mu);
    ipam_metrics_process(b);
}
