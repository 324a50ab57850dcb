/* The Service controller: watch cache, work queue, start-up order, reconcile. */
#include "controller.h"

#include <errno.h>
#include <grpc/status.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ametrics.h"
#include "ipam/log.h"
#include "kvconfig.h"
#include "strmap.h"

#define MAX_BACKOFF_MS 60000
#define FIRST_BACKOFF_MS 500
#define LIST_PAGE 500
#define MAX_CONFLICT_RETRIES 3
#define ITEMS_PER_TURN 64
/* The server ends quiet watches after this; they resume from the last version. */
#define WATCH_TIMEOUT 300

static void oom(void)
{
    fputs("k8s-adapter: out of memory\n", stderr);
    abort();
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- work queue ------------------------------------------------------- */

struct qent {
    char *key;
    int attempts;
    int64_t due;
    bool ready, delayed;
};

struct queue {
    struct strmap entries; /* key -> struct qent */
    struct qent **ready;   /* FIFO ring */
    size_t rhead, rcount, rcap;
    struct qent **delayed; /* unordered; small in practice */
    size_t dcount, dcap;
};

static struct qent *q_entry(struct queue *q, const char *key)
{
    struct qent *e = strmap_get(&q->entries, key);
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e || !(e->key = strdup(key)))
            oom();
        strmap_put(&q->entries, key, e);
    }
    return e;
}

static void q_undelay(struct queue *q, struct qent *e)
{
    for (size_t i = 0; i < q->dcount; i++)
        if (q->delayed[i] == e) {
            q->delayed[i] = q->delayed[--q->dcount];
            break;
        }
    e->delayed = false;
}

static void q_add(struct queue *q, const char *key)
{
    struct qent *e = q_entry(q, key);
    if (e->delayed)
        q_undelay(q, e);
    if (e->ready)
        return;
    if (q->rcount == q->rcap) {
        size_t ncap = q->rcap ? q->rcap * 2 : 256;
        struct qent **n = malloc(ncap * sizeof(*n));
        if (!n)
            oom();
        for (size_t i = 0; i < q->rcount; i++)
            n[i] = q->ready[(q->rhead + i) % q->rcap];
        free(q->ready);
        q->ready = n;
        q->rhead = 0;
        q->rcap = ncap;
    }
    q->ready[(q->rhead + q->rcount++) % q->rcap] = e;
    e->ready = true;
}

static struct qent *q_pop(struct queue *q)
{
    if (!q->rcount)
        return NULL;
    struct qent *e = q->ready[q->rhead];
    q->rhead = (q->rhead + 1) % q->rcap;
    q->rcount--;
    e->ready = false;
    return e;
}

static void q_forget(struct queue *q, struct qent *e)
{
    if (e->ready || e->delayed)
        return;
    strmap_del(&q->entries, e->key);
    free(e->key);
    free(e);
}

/* Schedules a retry with exponential backoff. */
static void q_retry(struct queue *q, struct qent *e)
{
    if (e->ready)
        return;
    int shift = e->attempts < 7 ? e->attempts : 7;
    int64_t delay = (int64_t)FIRST_BACKOFF_MS << shift;
    e->attempts++;
    e->due = now_ms() + (delay < MAX_BACKOFF_MS ? delay : MAX_BACKOFF_MS);
    if (e->delayed)
        return;
    if (q->dcount == q->dcap) {
        q->dcap = q->dcap ? q->dcap * 2 : 64;
        struct qent **n = realloc(q->delayed, q->dcap * sizeof(*n));
        if (!n)
            oom();
        q->delayed = n;
    }
    q->delayed[q->dcount++] = e;
    e->delayed = true;
}

/* Moves due retries to the ready queue; returns ms to the next one (-1: none). */
static int64_t q_promote(struct queue *q)
{
    int64_t now = now_ms(), next = -1;
    for (size_t i = 0; i < q->dcount;) {
        struct qent *e = q->delayed[i];
        if (e->due <= now) {
            q->delayed[i] = q->delayed[--q->dcount];
            e->delayed = false;
            q_add(q, e->key);
            continue;
        }
        if (next < 0 || e->due - now < next)
            next = e->due - now;
        i++;
    }
    return next;
}

static void q_free(struct queue *q)
{
    size_t i = 0;
    const char *k;
    void *v;
    while (strmap_next(&q->entries, &i, &k, &v)) {
        struct qent *e = v;
        free(e->key);
        free(e);
    }
    strmap_free(&q->entries);
    free(q->ready);
    free(q->delayed);
}

/* ---- the controller --------------------------------------------------- */

/* When a watch that ended may be opened again. One that delivered something
 * or ran a while resumes at once; one refused at once (403, 429, 500, no
 * connection) waits, doubling up to WATCH_MAX_BACKOFF_MS, and at least as
 * long as a Retry-After asked: never a tight loop against the API server. */
struct wback {
    int64_t opened, retry_at, backoff;
    bool delivered;
    bool ended; /* by an ERROR event: its end is already counted */
};

#define WATCH_MAX_BACKOFF_MS 30000
#define WATCH_HEALTHY_MS 10000
#define MAX_RETRY_AFTER_S 60 /* a server's Retry-After is honoured up to this */

static void wb_opened(struct wback *b)
{
    b->opened = now_ms();
    b->delivered = false;
    b->ended = false;
}

/* Returns the delay chosen, in ms. A watch ends once: by an ERROR event
 * (the stream's own end then counts for nothing) or by its end. */
static int64_t wb_ended(struct wback *b, long retry_after_s)
{
    int64_t now = now_ms(), delay = 0;
    if (b->ended)
        return b->retry_at > now ? b->retry_at - now : 0;
    if (retry_after_s > MAX_RETRY_AFTER_S)
        retry_after_s = MAX_RETRY_AFTER_S;
    if (b->delivered || now - b->opened >= WATCH_HEALTHY_MS) {
        b->backoff = 0;
    } else {
        b->backoff = b->backoff ? b->backoff * 2 : FIRST_BACKOFF_MS;
        if (b->backoff > WATCH_MAX_BACKOFF_MS)
            b->backoff = WATCH_MAX_BACKOFF_MS;
        delay = b->backoff;
    }
    if (retry_after_s * 1000 > delay)
        delay = retry_after_s * 1000;
    b->retry_at = now + delay;
    return delay;
}

/* An ERROR event ends a watch: its Status may ask for a wait. */
static int64_t wb_error_event(struct wback *b, const cJSON *status)
{
    const cJSON *ra = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(status, "details"), "retryAfterSeconds");
    long secs = 0;
    if (cJSON_IsNumber(ra) && ra->valuedouble > 0)
        secs = ra->valuedouble < MAX_RETRY_AFTER_S ? (long)ra->valuedouble : MAX_RETRY_AFTER_S;
    int64_t delay = wb_ended(b, secs);
    b->ended = true;
    return delay;
}

struct ctl {
    struct ctl_opts o;
    struct kube *kube;
    ipam_client *ipam;
    struct strmap svcs; /* "ns/name" -> cJSON Service */
    char *svc_rv;
    struct kube_watch *svc_watch, *cm_watch;
    bool svc_watch_dead, cm_watch_dead, need_relist;
    struct wback svc_wb, cm_wb;
    bool have_cm;
    char *cm_rv;
    struct kv_config cfg;
    struct strmap applied; /* ipamd pool names applied for cfg */
    struct strmap warned;  /* key -> last Warning message sent */
    /* key -> the resourceVersions our own writes gave the Service in its
     * last reconcile, then the one it had when that reconcile ended DONE,
     * space-separated, oldest first: the watch's echoes of our own writes
     * need no second reconcile (with --write-status a reconcile makes two). */
    struct strmap done_rv;
    char wrote_rv[256]; /* the reconcile under way's writes' rvs */
    struct queue q;
    atomic_int ipamd_lost; /* set by the ipamd watcher thread */
    atomic_int stopping;
    pthread_t watcher;
    bool watcher_started;
    pthread_mutex_t stream_mu;
    ipam_stream *stream;
    int64_t next_resync;
    /* Leases created after this ipamd revision may belong to Services the
     * cache has not seen yet (another adapter made them): not orphans yet. */
    uint64_t resync_rev;
};

static void owner_of(const struct ctl *c, const char *ns, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s/%s", c->o.owner_prefix, ns, name);
}

/* ---- ipamd ------------------------------------------------------------ */

/* Calls ipamd; UNAVAILABLE marks ipamd as possibly restarted. */
static int ipam_call(struct ctl *c, ipam_method_id m, const ProtobufCMessage *req,
                     ProtobufCMessage **resp, char **msg)
{
    *resp = NULL;
    int rc = ipam_client_invoke(c->ipam, m, req, resp, msg);
    am_ipamd(ipam_methods[m].name, rc);
    if (rc == GRPC_STATUS_UNAVAILABLE)
        atomic_store(&c->ipamd_lost, 1);
    return rc;
}

/* Watches ipamd's Watch stream: when it ends, ipamd went away (and may come
 * back empty), so the controller must re-claim before allocating again. */
static void *ipamd_watcher(void *arg)
{
    struct ctl *c = arg;
    while (!atomic_load(&c->stopping)) {
        Ipam__V1__WatchRequest req = IPAM__V1__WATCH_REQUEST__INIT;
        ipam_stream *s = ipam_client_stream_invoke(c->ipam, IPAM_METHOD_WATCH, &req.base);
        pthread_mutex_lock(&c->stream_mu);
        c->stream = s;
        pthread_mutex_unlock(&c->stream_mu);
        if (atomic_load(&c->stopping))
            ipam_stream_cancel(s);
        int status;
        char *msg = NULL;
        ProtobufCMessage *m;
        bool established = false;
        while ((m = ipam_stream_next(s, &status, &msg))) {
            established = true;
            protobuf_c_message_free_unpacked(m, NULL);
        }
        pthread_mutex_lock(&c->stream_mu);
        c->stream = NULL;
        pthread_mutex_unlock(&c->stream_mu);
        ipam_stream_close(s);
        if (atomic_load(&c->stopping)) {
            free(msg);
            break;
        }
        if (established)
            log_warn("ipamd's watch stream ended (%s): re-claiming before any new allocation",
                     msg ? msg : ipam_status_name(status));
        free(msg);
        atomic_store(&c->ipamd_lost, 1);
        kube_wakeup(c->kube);
        /* Reconnect pacing, not synchronisation. */
        for (int i = 0; i < 10 && !atomic_load(&c->stopping); i++) {
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* ---- API server ------------------------------------------------------- */

static void svc_path(char *buf, size_t len, const char *ns, const char *name, const char *sub)
{
    snprintf(buf, len, "/api/v1/namespaces/%s/services/%s%s", ns, name, sub ? sub : "");
}

/* Safe for a URL path: Kubernetes names are DNS labels/subdomains. */
static bool name_ok(const char *s)
{
    if (!s[0] || strlen(s) > 253)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '.'))
            return false;
    return true;
}

static void post_event(struct ctl *c, const struct svc *s, bool warning, const char *reason,
                       const char *message)
{
    char key[600];
    svc_key(s, key, sizeof(key));
    if (warning) {
        char *last = strmap_get(&c->warned, key);
        if (last && strcmp(last, message) == 0)
            return; /* The same warning again on a retry says nothing new. */
        char *copy = strdup(message);
        if (!copy)
            oom();
        free(strmap_put(&c->warned, key, copy));
        log_warn("%s: %s: %s", key, reason, message);
    } else {
        free(strmap_del(&c->warned, key));
    }
    char ts[32], name[320], path[400];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(name, sizeof(name), "%.200s.%llx%09ld", s->name, (unsigned long long)now.tv_sec,
             now.tv_nsec);
    cJSON *ev = cJSON_CreateObject();
    if (!ev)
        oom();
    cJSON_AddStringToObject(ev, "apiVersion", "v1");
    cJSON_AddStringToObject(ev, "kind", "Event");
    cJSON *md = cJSON_AddObjectToObject(ev, "metadata");
    cJSON_AddStringToObject(md, "name", name);
    cJSON_AddStringToObject(md, "namespace", s->ns);
    cJSON *io = cJSON_AddObjectToObject(ev, "involvedObject");
    cJSON_AddStringToObject(io, "apiVersion", "v1");
    cJSON_AddStringToObject(io, "kind", "Service");
    cJSON_AddStringToObject(io, "namespace", s->ns);
    cJSON_AddStringToObject(io, "name", s->name);
    if (s->uid)
        cJSON_AddStringToObject(io, "uid", s->uid);
    if (s->rv)
        cJSON_AddStringToObject(io, "resourceVersion", s->rv);
    cJSON_AddStringToObject(ev, "reason", reason);
    cJSON_AddStringToObject(ev, "message", message);
    cJSON_AddStringToObject(ev, "type", warning ? "Warning" : "Normal");
    cJSON_AddStringToObject(ev, "firstTimestamp", ts);
    cJSON_AddStringToObject(ev, "lastTimestamp", ts);
    cJSON_AddNumberToObject(ev, "count", 1);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(ev, "source"), "component", "k8s-adapter");
    char *body = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    if (!body)
        oom();
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/events", s->ns);
    char *resp = NULL, err[300];
    int code =
        kube_request(c->kube, "POST", path, "application/json", body, &resp, err, sizeof(err));
    if (code < 200 || code >= 300)
        log_warn("cannot post event %s for %s: %s", reason, key,
                 code < 0
                     ? err
                     : (resp && kube_status_message(resp) ? kube_status_message(resp) : "error"));
    free(resp);
    free(body);
}

/* Reports a reconcile that cannot finish now (it waits or is retried): a
 * Warning SyncLoadBalancerFailed, preceded by EnsuringLoadBalancer when the
 * Service has no address yet and no Warning is outstanding, i.e. the first
 * time its attempt does not complete at once. A Service that gets its address
 * at once hears only EnsuredLoadBalancer (one Event, not two). Neither Event
 * is repeated while the Warning stays the same (post_event's dedup). */
static void sync_failed(struct ctl *c, const struct svc *s, bool fresh, const char *message)
{
    if (fresh) {
        char key[600];
        svc_key(s, key, sizeof(key));
        if (!strmap_get(&c->warned, key))
            post_event(c, s, false, "EnsuringLoadBalancer", "Ensuring load balancer");
    }
    post_event(c, s, true, "SyncLoadBalancerFailed", message);
}

/* Replaces the cached Service with obj (a copy is kept), or drops it. */
static void cache_put(struct ctl *c, const char *key, const cJSON *obj)
{
    cJSON *copy = obj ? cJSON_Duplicate(obj, 1) : NULL;
    if (obj && !copy)
        oom();
    cJSON *old = copy ? strmap_put(&c->svcs, key, copy) : strmap_del(&c->svcs, key);
    cJSON_Delete(old);
}

static const char *obj_rv(const cJSON *obj)
{
    const cJSON *rv = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "resourceVersion");
    return cJSON_IsString(rv) ? rv->valuestring : NULL;
}

/* Key "ns/name" of an object, or -1 when it has none usable. */
static int obj_key(const cJSON *obj, char *buf, size_t len)
{
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(md, "namespace");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(md, "name");
    if (!cJSON_IsString(ns) || !cJSON_IsString(name) || !name_ok(ns->valuestring) ||
        !name_ok(name->valuestring))
        return -1;
    snprintf(buf, len, "%s/%s", ns->valuestring, name->valuestring);
    return 0;
}

/* Sends a merge patch; on success refreshes the cache from the reply. */
static int patch(struct ctl *c, const struct svc *s, cJSON *p, bool status, char *err,
                 size_t errlen)
{
    char path[700], key[600];
    svc_path(path, sizeof(path), s->ns, s->name, status ? "/status" : NULL);
    char *body = cJSON_PrintUnformatted(p);
    if (!body)
        oom();
    char *resp = NULL;
    int code = kube_request(c->kube, "PATCH", path, "application/merge-patch+json", body, &resp,
                            err, errlen);
    free(body);
    if (code >= 200 && code < 300) {
        cJSON *obj = resp ? cJSON_Parse(resp) : NULL;
        svc_key(s, key, sizeof(key));
        if (obj)
            cache_put(c, key, obj);
        const char *rv = obj_rv(obj);
        size_t used = strlen(c->wrote_rv);
        if (rv && !strchr(rv, ' ') && used + strlen(rv) + 2 < sizeof(c->wrote_rv))
            snprintf(c->wrote_rv + used, sizeof(c->wrote_rv) - used, "%s%s", used ? " " : "", rv);
        cJSON_Delete(obj);
    } else if (code > 0) {
        const char *m = resp ? kube_status_message(resp) : NULL;
        snprintf(err, errlen, "PATCH %s: HTTP %d%s%s", path, code, m ? ": " : "", m ? m : "");
    }
    free(resp);
    return code;
}

/* Fetches one Service afresh into the cache (after a 409). */
static void refresh(struct ctl *c, const struct svc *s)
{
    char path[700], key[600], err[300];
    svc_path(path, sizeof(path), s->ns, s->name, NULL);
    svc_key(s, key, sizeof(key));
    char *resp = NULL;
    int code = kube_request(c->kube, "GET", path, NULL, NULL, &resp, err, sizeof(err));
    if (code == 200) {
        cJSON *obj = cJSON_Parse(resp);
        if (obj)
            cache_put(c, key, obj);
        cJSON_Delete(obj);
    } else if (code == 404) {
        cache_put(c, key, NULL);
    }
    free(resp);
}

/* ---- pools ------------------------------------------------------------ */

/* Makes ipamd hold the pool as the ConfigMap says (once per config). */
static int ensure_pool(struct ctl *c, const struct kv_pool *p, char *err, size_t errlen)
{
    if (strmap_get(&c->applied, p->ipam))
        return 0;
    Ipam__V1__Pool pool = IPAM__V1__POOL__INIT;
    pool.name = p->ipam;
    pool.blocks = p->blocks;
    pool.n_blocks = p->nblocks;
    pool.search_order = c->cfg.desc ? IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC
                                    : IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_ASC;
    pool.skip_end_ips = c->cfg.skip_end && p->cidr;
    pool.avoid_buggy_ips = true; /* kube-vip never hands out x.x.x.0 or x.x.x.255 */
    Ipam__V1__ApplyPoolRequest req = IPAM__V1__APPLY_POOL_REQUEST__INIT;
    req.pool = &pool;
    ProtobufCMessage *resp;
    char *msg = NULL;
    int rc = ipam_call(c, IPAM_METHOD_APPLY_POOL, &req.base, &resp, &msg);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    if (rc != GRPC_STATUS_OK) {
        snprintf(err, errlen, "ipamd refused pool `%s' (ConfigMap key %s): %s", p->ipam, p->key,
                 msg ? msg : ipam_status_name(rc));
        free(msg);
        return -1;
    }
    strmap_put(&c->applied, p->ipam, (void *)1);
    return 0;
}

/* ---- reconcile -------------------------------------------------------- */

enum outcome { DONE, RETRY, WAIT };

static enum outcome release_lease(struct ctl *c, const char *owner, char *err, size_t errlen)
{
    Ipam__V1__ReleaseRequest req = IPAM__V1__RELEASE_REQUEST__INIT;
    req.owner = (char *)owner;
    ProtobufCMessage *resp;
    char *msg = NULL;
    int rc = ipam_call(c, IPAM_METHOD_RELEASE, &req.base, &resp, &msg);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    if (rc == GRPC_STATUS_OK)
        log_info("released the lease of %s", owner);
    if (rc != GRPC_STATUS_OK && rc != GRPC_STATUS_NOT_FOUND) {
        snprintf(err, errlen, "ipamd: release %s: %s", owner, msg ? msg : ipam_status_name(rc));
        free(msg);
        return RETRY;
    }
    free(msg);
    return DONE;
}

/* Releases the lease and removes what the adapter wrote on the Service. */
static enum outcome let_go(struct ctl *c, const struct svc *s, const char *owner, char *err,
                           size_t errlen)
{
    if (release_lease(c, owner, err, errlen) != DONE)
        return RETRY;
    for (int attempt = 0; attempt < MAX_CONFLICT_RETRIES; attempt++) {
        cJSON *p = svc_patch_release(s);
        if (!p)
            return DONE;
        int code = patch(c, s, p, false, err, errlen);
        cJSON_Delete(p);
        if ((code >= 200 && code < 300) || code == 404)
            return DONE;
        if (code != 409)
            return RETRY;
        return RETRY; /* Fresh data comes through the watch; try again then. */
    }
    return RETRY;
}

struct lease_view {
    char *addrs[2];
    size_t n;
    char pool[128];
};

static void lease_view_set(struct lease_view *v, const Ipam__V1__Lease *l)
{
    v->n = 0;
    for (size_t i = 0; i < l->n_addresses && i < 2; i++) {
        v->addrs[v->n] = strdup(l->addresses[i]);
        if (!v->addrs[v->n])
            oom();
        v->n++;
    }
    snprintf(v->pool, sizeof(v->pool), "%s", l->pool);
}

static void lease_view_free(struct lease_view *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->addrs[i]);
    v->n = 0;
}

/* Asks ipamd for the lease; fills v. Returns the gRPC code and message. */
static int allocate(struct ctl *c, const struct svc *s, const char *owner, const char *pool,
                    bool share, struct lease_view *v, char **msg)
{
    Ipam__V1__AllocateRequest req = IPAM__V1__ALLOCATE_REQUEST__INIT;
    Ipam__V1__Port ports[MAX_SVC_PORTS], *pp[MAX_SVC_PORTS];
    Ipam__V1__AllocateRequest__LabelsEntry lab[2], *lp[2];
    req.pool = (char *)pool;
    req.owner = (char *)owner;
    req.addresses = (char **)s->requested;
    req.n_addresses = s->nrequested;
    req.family = s->family;
    req.primary_family = s->primary;
    for (size_t i = 0; i < s->nports; i++) {
        ipam__v1__port__init(&ports[i]);
        ports[i].protocol = (char *)s->ports[i].proto;
        ports[i].port = s->ports[i].port;
        pp[i] = &ports[i];
    }
    req.ports = pp;
    req.n_ports = s->nports;
    /* Sharing is decided per namespace (allow-share-<ns>), so it travels as a
     * sharing key rather than as a property of the pool. */
    req.sharing_key = share ? "kube-vip.io/allow-share" : "";
    const char *lk[2] = {"k8s.io/namespace", "k8s.io/name"};
    const char *lv[2] = {s->ns, s->name};
    for (int i = 0; i < 2; i++) {
        ipam__v1__allocate_request__labels_entry__init(&lab[i]);
        lab[i].key = (char *)lk[i];
        lab[i].value = (char *)lv[i];
        lp[i] = &lab[i];
    }
    req.labels = lp;
    req.n_labels = 2;
    ProtobufCMessage *resp;
    int rc = ipam_call(c, IPAM_METHOD_ALLOCATE, &req.base, &resp, msg);
    if (rc == GRPC_STATUS_OK)
        lease_view_set(v, ((Ipam__V1__AllocateResponse *)resp)->lease);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int get_lease(struct ctl *c, const char *owner, struct lease_view *v)
{
    Ipam__V1__GetLeaseRequest req = IPAM__V1__GET_LEASE_REQUEST__INIT;
    req.owner = (char *)owner;
    ProtobufCMessage *resp;
    char *msg = NULL;
    int rc = ipam_call(c, IPAM_METHOD_GET_LEASE, &req.base, &resp, &msg);
    free(msg);
    if (rc == GRPC_STATUS_OK)
        lease_view_set(v, ((Ipam__V1__GetLeaseResponse *)resp)->lease);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static bool lease_has_all(const struct lease_view *v, const struct svc *s)
{
    for (size_t i = 0; i < s->nrequested; i++) {
        bool found = false;
        for (size_t j = 0; j < v->n; j++)
            found |= strcmp(v->addrs[j], s->requested[i]) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* Gets the Service its lease: allocates, re-claims, or keeps what it holds. */
static enum outcome obtain(struct ctl *c, const struct svc *s, const char *owner,
                           const struct kv_pool *pool, struct lease_view *v, char *err,
                           size_t errlen)
{
    bool share = kv_allow_share(&c->cfg, s->ns);
    char *msg = NULL;
    int rc = allocate(c, s, owner, pool->ipam, share, v, &msg);
    if (rc == GRPC_STATUS_FAILED_PRECONDITION && strstr(msg ? msg : "", "already holds")) {
        /* The owner holds a lease that differs from the request. A pool change
         * never moves an address the Service holds; a changed requested
         * address is honoured: release, then allocate what it asks for. */
        free(msg);
        msg = NULL;
        struct lease_view cur = {0};
        if (get_lease(c, owner, &cur) == GRPC_STATUS_OK) {
            if (!s->nrequested || lease_has_all(&cur, s)) {
                *v = cur;
                return DONE;
            }
            log_info("%s: requested %s, holds %s: moving", owner, s->requested[0], cur.addrs[0]);
            lease_view_free(&cur);
            if (release_lease(c, owner, err, errlen) != DONE)
                return RETRY;
        }
        rc = allocate(c, s, owner, pool->ipam, share, v, &msg);
    }
    if (rc == GRPC_STATUS_INVALID_ARGUMENT && s->nrequested &&
        strstr(msg ? msg : "", "is not in pool")) {
        /* An address outside every pool is held as a static reservation, so
         * no pool hands it out again. */
        free(msg);
        msg = NULL;
        rc = allocate(c, s, owner, "", share, v, &msg);
    }
    const char *in = msg ? strstr(msg, "is in pool `") : NULL;
    if (rc == GRPC_STATUS_INVALID_ARGUMENT && s->nrequested && in) {
        /* An address another pool holds (the ConfigMap's keys changed after
         * the Service got it, say) is taken from that pool, so it counts as
         * used there and is never handed out again. */
        char other[300];
        in += strlen("is in pool `");
        snprintf(other, sizeof(other), "%.*s", (int)strcspn(in, "'"), in);
        free(msg);
        msg = NULL;
        rc = allocate(c, s, owner, other, share, v, &msg);
    }
    if (rc == GRPC_STATUS_OK) {
        free(msg);
        return DONE;
    }
    switch (rc) {
    case GRPC_STATUS_ALREADY_EXISTS:
        snprintf(err, errlen, "requested address is held by another Service or client: %s",
                 msg ? msg : "");
        break;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        snprintf(err, errlen, "address pool %s is exhausted: %s", pool->key, msg ? msg : "");
        break;
    default:
        snprintf(err, errlen, "ipamd: %s", msg ? msg : ipam_status_name(rc));
    }
    free(msg);
    return RETRY;
}

static enum outcome reconcile(struct ctl *c, const char *key)
{
    char err[800] = "", owner[700];
    const cJSON *obj = strmap_get(&c->svcs, key);
    if (!obj) {
        /* Gone from the API server: its lease goes too, and a Service made
         * again under this name starts with no Warning outstanding. */
        free(strmap_del(&c->warned, key));
        const char *slash = strchr(key, '/');
        if (!slash)
            return DONE;
        char ns[300];
        snprintf(ns, sizeof(ns), "%.*s", (int)(slash - key), key);
        owner_of(c, ns, slash + 1, owner, sizeof(owner));
        enum outcome r = release_lease(c, owner, err, sizeof(err));
        if (r != DONE)
            log_warn("%s: %s", key, err);
        return r;
    }
    struct svc s;
    if (svc_parse(obj, &c->o.svc, &s, err, sizeof(err)) != 0) {
        log_warn("ignoring %s: %s", key, err);
        return DONE;
    }
    owner_of(c, s.ns, s.name, owner, sizeof(owner));
    enum outcome r = DONE;
    struct lease_view v = {0};

    if (s.deleting || !s.handled) {
        /* Deleted, no longer a LoadBalancer, or of another class: let go of
         * what we hold. A Service we never handled (or that another
         * controller handles) is left alone: whether we hold a lease for it
         * decides, and without our marks there is nothing to ask. No
         * Warning about it is outstanding any more. */
        free(strmap_del(&c->warned, key));
        bool ours = s.deleting && s.handled;
        if (!ours && (s.has_finalizer || s.ann_ips)) {
            int rc = get_lease(c, owner, &v);
            ours = rc == GRPC_STATUS_OK;
            if (rc != GRPC_STATUS_OK && rc != GRPC_STATUS_NOT_FOUND) {
                r = RETRY;
                goto out;
            }
        }
        if (ours) {
            r = let_go(c, &s, owner, err, sizeof(err));
            if (r != DONE)
                log_warn("%s: %s", key, err);
        }
        goto out;
    }
    if (s.spec_differs) {
        /* If the lease still holds the annotation's addresses, the user
         * edited spec.loadBalancerIP; otherwise the annotation was edited
         * (or neither is ours yet) and the annotation says what is wanted. */
        int rc = get_lease(c, owner, &v);
        if (rc == GRPC_STATUS_OK && lease_has_all(&v, &s))
            svc_prefer_spec(&s);
        lease_view_free(&v);
        if (rc != GRPC_STATUS_OK && rc != GRPC_STATUS_NOT_FOUND) {
            r = RETRY;
            goto out;
        }
    }
    /* No address yet: its first failure says EnsuringLoadBalancer first. */
    bool fresh = !s.ann_ips && !s.spec_ip;
    if (s.problem) {
        sync_failed(c, &s, fresh, s.problem);
        r = WAIT;
        goto out;
    }
    if (!c->have_cm) {
        snprintf(err, sizeof(err), "no address pools configured (ConfigMap %s/%s not found)",
                 c->o.cm_namespace, c->o.cm_name);
        sync_failed(c, &s, fresh, err);
        r = WAIT;
        goto out;
    }
    const struct kv_pool *pool = kv_pool_for(&c->cfg, s.ns);
    if (!pool) {
        snprintf(err, sizeof(err),
                 "no address pool for namespace %s (no cidr-%s, range-%s, cidr-global or "
                 "range-global in ConfigMap %s/%s)",
                 s.ns, s.ns, s.ns, c->o.cm_namespace, c->o.cm_name);
        sync_failed(c, &s, fresh, err);
        r = WAIT;
        goto out;
    }
    if (pool->error) {
        sync_failed(c, &s, fresh, pool->error);
        r = WAIT;
        goto out;
    }
    if (ensure_pool(c, pool, err, sizeof(err)) != 0) {
        sync_failed(c, &s, fresh, err);
        r = RETRY;
        goto out;
    }
    r = obtain(c, &s, owner, pool, &v, err, sizeof(err));
    if (r != DONE) {
        sync_failed(c, &s, fresh, err);
        goto out;
    }
    const char *iface = kv_interface(&c->cfg, s.ns);
    cJSON *p = svc_patch_assign(&s, v.addrs, v.n, iface);
    if (p) {
        int code = patch(c, &s, p, false, err, sizeof(err));
        cJSON_Delete(p);
        if (code == 409) {
            refresh(c, &s);
            r = RETRY;
            goto out;
        }
        if (code < 200 || code >= 300) {
            sync_failed(c, &s, fresh, err);
            r = RETRY;
            goto out;
        }
        char ips[200], msg[300];
        snprintf(ips, sizeof(ips), "%s%s%s", v.addrs[0], v.n > 1 ? "," : "",
                 v.n > 1 ? v.addrs[1] : "");
        snprintf(msg, sizeof(msg), "Ensured load balancer with %s", ips);
        log_info("%s: %s", key, msg);
        post_event(c, &s, false, "EnsuredLoadBalancer", msg);
        /* A status patch goes on from the version our PATCH made. */
        const char *now = obj_rv(strmap_get(&c->svcs, key));
        if (now) {
            free(s.rv);
            s.rv = strdup(now);
            if (!s.rv)
                oom();
        }
    }
    if (c->o.write_status) {
        cJSON *sp = svc_patch_status(&s, v.addrs, v.n);
        if (sp) {
            int code = patch(c, &s, sp, true, err, sizeof(err));
            cJSON_Delete(sp);
            if (code < 200 || code >= 300) {
                log_warn("%s: %s", key, err);
                r = RETRY;
            }
        }
    }
out:
    lease_view_free(&v);
    svc_free(&s);
    return r;
}

static void process(struct ctl *c, struct qent *e)
{
    c->wrote_rv[0] = '\0';
    enum outcome r = reconcile(c, e->key);
    am_reconcile(r == DONE ? "done" : r == RETRY ? "retry" : "wait");
    const char *rv = r == DONE ? obj_rv(strmap_get(&c->svcs, e->key)) : NULL;
    char *copy = NULL;
    if (rv) {
        const char *last = strrchr(c->wrote_rv, ' ');
        last = last ? last + 1 : c->wrote_rv;
        bool same = !strcmp(last, rv);
        size_t n = strlen(c->wrote_rv) + strlen(rv) + 2;
        copy = malloc(n);
        if (!copy)
            oom();
        if (same)
            memcpy(copy, c->wrote_rv, strlen(c->wrote_rv) + 1);
        else
            snprintf(copy, n, "%s%s%s", c->wrote_rv, c->wrote_rv[0] ? " " : "", rv);
    }
    free(copy ? strmap_put(&c->done_rv, e->key, copy) : strmap_del(&c->done_rv, e->key));
    if (r == RETRY) {
        q_retry(&c->q, e);
    } else {
        e->attempts = 0;
        q_forget(&c->q, e);
    }
    am_queue_depth(c->q.rcount + c->q.dcount);
}

/* ---- lists and watches ------------------------------------------------ */

static void set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
    if (src && !*dst)
        oom();
}

static void load_config(struct ctl *c, const cJSON *cm)
{
    struct kv_config old = c->cfg;
    bool had = c->have_cm;
    const cJSON *data = cm ? cJSON_GetObjectItemCaseSensitive(cm, "data") : NULL;
    kv_config_parse(cJSON_IsObject(data) ? data : NULL, c->o.owner_prefix, &c->cfg);
    c->have_cm = cm != NULL;
    set_str(&c->cm_rv, cm ? obj_rv(cm) : NULL);
    /* Re-apply pools on the next use, and requeue the Services whose pool,
     * sharing or interface changed (or that were waiting for any). */
    strmap_free(&c->applied);
    size_t i = 0;
    const char *k;
    void *v;
    while (strmap_next(&c->svcs, &i, &k, &v)) {
        const char *slash = strchr(k, '/');
        char ns[300];
        snprintf(ns, sizeof(ns), "%.*s", (int)(slash - k), k);
        const struct kv_pool *a = had ? kv_pool_for(&old, ns) : NULL;
        const struct kv_pool *b = kv_pool_for(&c->cfg, ns);
        bool same = had == c->have_cm && (a == NULL) == (b == NULL);
        if (same && a) {
            same = !strcmp(a->key, b->key) && a->nblocks == b->nblocks &&
                   (a->error == NULL) == (b->error == NULL);
            for (size_t j = 0; same && j < a->nblocks; j++)
                same = !strcmp(a->blocks[j], b->blocks[j]);
            same = same && kv_allow_share(&old, ns) == kv_allow_share(&c->cfg, ns);
            const char *ia = kv_interface(&old, ns), *ib = kv_interface(&c->cfg, ns);
            same = same && (ia == NULL) == (ib == NULL) && (!ia || !strcmp(ia, ib));
            same = same && old.desc == c->cfg.desc && old.skip_end == c->cfg.skip_end;
        }
        if (!same)
            q_add(&c->q, k);
    }
    kv_config_free(&old);
}

static int get_config(struct ctl *c, char *err, size_t errlen)
{
    /* Listed rather than read, for the list's resourceVersion: the watch that
     * follows starts there, so nothing in between is missed (a deletion
     * included), and it is recent enough to be replayable. The object's own
     * version may be older than the server's watch history: a watch from it
     * gets 410 Expired, every time. */
    char path[600], *resp = NULL;
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/configmaps?fieldSelector=metadata.name%%3D%s",
             c->o.cm_namespace, c->o.cm_name);
    int code = kube_request(c->kube, "GET", path, NULL, NULL, &resp, err, errlen);
    int rc = 0;
    if (code == 200) {
        cJSON *list = cJSON_Parse(resp);
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(list, "items");
        const char *rv = obj_rv(list);
        if (!list || !cJSON_IsArray(items) || !rv) {
            snprintf(err, errlen, "GET %s: malformed list", path);
            rc = -1;
        } else {
            const cJSON *cm = cJSON_GetArrayItem(items, 0);
            if (!cJSON_IsObject(cm)) {
                if (c->have_cm || !c->cm_rv)
                    log_warn("ConfigMap %s/%s not found: waiting for it", c->o.cm_namespace,
                             c->o.cm_name);
                cm = NULL;
            }
            load_config(c, cm);
            set_str(&c->cm_rv, rv);
        }
        cJSON_Delete(list);
    } else {
        if (code > 0)
            snprintf(err, errlen, "GET %s: HTTP %d%s%s", path, code,
                     resp && kube_status_message(resp) ? ": " : "",
                     resp && kube_status_message(resp) ? kube_status_message(resp) : "");
        rc = -1;
    }
    free(resp);
    return rc;
}

/* Lists every Service (paginated) and replaces the cache. */
static int list_services(struct ctl *c, char *err, size_t errlen)
{
    struct strmap fresh = {0};
    char *cont = NULL, *rv = NULL;
    int rc = -1;
    for (;;) {
        char path[1200], *resp = NULL;
        snprintf(path, sizeof(path), "/api/v1/services?limit=%d%s%s", LIST_PAGE,
                 cont ? "&continue=" : "", cont ? cont : "");
        int code = kube_request(c->kube, "GET", path, NULL, NULL, &resp, err, errlen);
        if (code != 200) {
            if (code > 0)
                snprintf(err, errlen, "LIST services: HTTP %d%s%s", code,
                         resp && kube_status_message(resp) ? ": " : "",
                         resp && kube_status_message(resp) ? kube_status_message(resp) : "");
            free(resp);
            goto out;
        }
        cJSON *list = cJSON_Parse(resp);
        free(resp);
        if (!list) {
            snprintf(err, errlen, "LIST services: malformed JSON");
            goto out;
        }
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(list, "metadata");
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(list, "items"), *it;
        const cJSON *lrv = cJSON_GetObjectItemCaseSensitive(md, "resourceVersion");
        const cJSON *lc = cJSON_GetObjectItemCaseSensitive(md, "continue");
        if (!rv && cJSON_IsString(lrv))
            set_str(&rv, lrv->valuestring);
        cJSON_ArrayForEach(it, items)
        {
            char key[600];
            if (obj_key(it, key, sizeof(key)) != 0)
                continue;
            cJSON *copy = cJSON_Duplicate(it, 1);
            if (!copy)
                oom();
            cJSON_Delete(strmap_put(&fresh, key, copy));
        }
        /* The continue token is opaque but URL-safe base64 in practice; escape
         * the few characters that would break the query. */
        free(cont);
        cont = NULL;
        if (cJSON_IsString(lc) && lc->valuestring[0]) {
            size_t n = strlen(lc->valuestring);
            cont = malloc(3 * n + 1);
            if (!cont)
                oom();
            char *o = cont;
            for (const char *p = lc->valuestring; *p; p++) {
                if (*p == '+' || *p == '/' || *p == '=' || *p == '&' || *p == '%') {
                    snprintf(o, 4, "%%%02X", (unsigned char)*p);
                    o += 3;
                } else {
                    *o++ = *p;
                }
            }
            *o = 0;
        }
        cJSON_Delete(list);
        if (!cont)
            break;
    }
    /* Services gone since the last list are reconciled (released) too. */
    size_t i = 0;
    const char *k;
    void *v;
    while (strmap_next(&c->svcs, &i, &k, &v)) {
        if (!strmap_get(&fresh, k))
            q_add(&c->q, k);
        cJSON_Delete(v);
    }
    strmap_free(&c->svcs);
    c->svcs = fresh;
    memset(&fresh, 0, sizeof(fresh));
    set_str(&c->svc_rv, rv);
    rc = 0;
out:
    i = 0;
    while (strmap_next(&fresh, &i, &k, &v))
        cJSON_Delete(v);
    strmap_free(&fresh);
    free(cont);
    free(rv);
    return rc;
}

/* Where rv is in done_rv's list: 0 not there, 1 before the last, 2 last. */
static int rv_position(const char *list, const char *rv)
{
    size_t n = strlen(rv);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !memcmp(p, rv, n))
            return end ? 1 : 2;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

static void on_svc_event(void *ctx, const char *type, cJSON *object)
{
    struct ctl *c = ctx;
    if (strcmp(type, "ERROR"))
        c->svc_wb.delivered = true;
    char key[600];
    const char *rv = obj_rv(object);
    if (!strcmp(type, "ERROR")) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(object, "code");
        int64_t delay = wb_error_event(&c->svc_wb, object);
        log_warn("Service watch error %d: relisting in %.1f s",
                 cJSON_IsNumber(code) ? code->valueint : 0, (double)delay / 1000);
        c->need_relist = true;
        return;
    }
    if (rv)
        set_str(&c->svc_rv, rv);
    if (!strcmp(type, "BOOKMARK"))
        return;
    if (obj_key(object, key, sizeof(key)) != 0) {
        log_warn("ignoring a Service watch event without a usable name");
        return;
    }
    bool deleted = !strcmp(type, "DELETED");
    int at = deleted || !rv ? 0 : rv_position(strmap_get(&c->done_rv, key), rv);
    if (at == 0)
        free(strmap_del(&c->done_rv, key));
    /* The echo of an earlier write of ours is older than what we hold. */
    if (at != 1)
        cache_put(c, key, deleted ? NULL : object);
    if (at == 0)
        q_add(&c->q, key);
}

static void on_svc_closed(void *ctx, int http_status, const char *err)
{
    struct ctl *c = ctx;
    int64_t delay = wb_ended(&c->svc_wb, kube_retry_after(c->kube));
    if (http_status == 410)
        c->need_relist = true;
    else if (!atomic_load(&c->stopping) && err)
        log_msg(delay ? LOG_WARN : LOG_INFO, "Service watch ended (%d: %s): resuming in %.1f s",
                http_status, err, (double)delay / 1000);
    c->svc_watch = NULL; /* The library frees it. */
    c->svc_watch_dead = true;
}

static void on_cm_event(void *ctx, const char *type, cJSON *object)
{
    struct ctl *c = ctx;
    if (strcmp(type, "ERROR"))
        c->cm_wb.delivered = true;
    if (!strcmp(type, "BOOKMARK") || !strcmp(type, "ERROR")) {
        if (!strcmp(type, "ERROR")) {
            int64_t delay = wb_error_event(&c->cm_wb, object);
            log_warn("ConfigMap watch error: reading it again in %.1f s", (double)delay / 1000);
            c->cm_watch_dead = true;
        }
        return;
    }
    log_info("ConfigMap %s/%s %s", c->o.cm_namespace, c->o.cm_name,
             !strcmp(type, "DELETED") ? "deleted" : "changed");
    load_config(c, !strcmp(type, "DELETED") ? NULL : object);
}

static void on_cm_closed(void *ctx, int http_status, const char *err)
{
    struct ctl *c = ctx;
    int64_t delay = wb_ended(&c->cm_wb, kube_retry_after(c->kube));
    if (!atomic_load(&c->stopping) && err)
        log_msg(delay ? LOG_WARN : LOG_INFO, "ConfigMap watch ended (%d: %s): resuming in %.1f s",
                http_status, err, (double)delay / 1000);
    c->cm_watch = NULL; /* The library frees it. */
    c->cm_watch_dead = true;
}

static const struct kube_watch_ops svc_ops = {on_svc_event, on_svc_closed};
static const struct kube_watch_ops cm_ops = {on_cm_event, on_cm_closed};

static void start_watches(struct ctl *c)
{
    char path[1200];
    int64_t now = now_ms();
    if (!c->svc_watch && now < c->svc_wb.retry_at) {
        c->svc_watch_dead = true; /* the main loop opens it when due */
    } else if (!c->svc_watch) {
        wb_opened(&c->svc_wb);
        snprintf(path, sizeof(path),
                 "/api/v1/"
                 "services?watch=1&allowWatchBookmarks=true&timeoutSeconds=%d&resourceVersion=%s",
                 WATCH_TIMEOUT, c->svc_rv ? c->svc_rv : "0");
        c->svc_watch = kube_watch_open(c->kube, path, &svc_ops, c);
        c->svc_watch_dead = c->svc_watch == NULL; /* out of memory: try again */
    }
    if (!c->cm_watch && now < c->cm_wb.retry_at) {
        c->cm_watch_dead = true;
    } else if (!c->cm_watch) {
        wb_opened(&c->cm_wb);
        /* The ConfigMap is listed again before the watch starts (get_config),
         * so the watch starts from that list's version. */
        snprintf(path, sizeof(path),
                 "/api/v1/namespaces/%s/configmaps?watch=1&allowWatchBookmarks=true&"
                 "timeoutSeconds=%d&fieldSelector=metadata.name%%3D%s%s%s",
                 c->o.cm_namespace, WATCH_TIMEOUT, c->o.cm_name,
                 c->cm_rv ? "&resourceVersion=" : "", c->cm_rv ? c->cm_rv : "");
        c->cm_watch = kube_watch_open(c->kube, path, &cm_ops, c);
        c->cm_watch_dead = c->cm_watch == NULL;
    }
}

static void stop_watches(struct ctl *c)
{
    if (c->svc_watch)
        kube_watch_close(c->svc_watch);
    if (c->cm_watch)
        kube_watch_close(c->cm_watch);
    c->svc_watch = c->cm_watch = NULL;
}

/* ---- start-up order --------------------------------------------------- */

static bool has_address(const cJSON *obj, const struct svc_opts *o)
{
    struct svc s;
    char err[200];
    if (svc_parse(obj, o, &s, err, sizeof(err)) != 0)
        return false;
    bool r = s.handled && !s.deleting && s.nrequested > 0;
    svc_free(&s);
    return r;
}

/* ipamd's current revision, or 0 when it can't be read. */
static uint64_t ipamd_revision(struct ctl *c)
{
    Ipam__V1__ListPoolsRequest req = IPAM__V1__LIST_POOLS_REQUEST__INIT;
    ProtobufCMessage *resp;
    char *msg = NULL;
    uint64_t rev = 0;
    if (ipam_call(c, IPAM_METHOD_LIST_POOLS, &req.base, &resp, &msg) == GRPC_STATUS_OK)
        rev = ((Ipam__V1__ListPoolsResponse *)resp)->revision;
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    free(msg);
    return rev;
}

/* Releases leases of ours whose Service is gone or no longer handled, among
 * those created at or before max_rev: a younger lease may be another
 * adapter's, for a Service this one has not seen yet. */
static int release_orphans(struct ctl *c, uint64_t max_rev)
{
    char prefix[300], *token = NULL;
    snprintf(prefix, sizeof(prefix), "%s/", c->o.owner_prefix);
    int rc = 0;
    do {
        Ipam__V1__ListLeasesRequest req = IPAM__V1__LIST_LEASES_REQUEST__INIT;
        req.owner_prefix = prefix;
        req.page_token = token ? token : "";
        ProtobufCMessage *resp;
        char *msg = NULL;
        int code = ipam_call(c, IPAM_METHOD_LIST_LEASES, &req.base, &resp, &msg);
        free(token);
        token = NULL;
        if (code != GRPC_STATUS_OK) {
            log_warn("cannot list leases to release orphans: %s", msg ? msg : "");
            free(msg);
            return -1;
        }
        const Ipam__V1__ListLeasesResponse *r = (const void *)resp;
        for (size_t i = 0; i < r->n_leases; i++) {
            if (r->leases[i]->create_revision > max_rev)
                continue;
            const char *key = r->leases[i]->owner + strlen(prefix);
            const cJSON *obj = strmap_get(&c->svcs, key);
            struct svc s;
            char err[300];
            bool keep = false;
            if (obj && svc_parse(obj, &c->o.svc, &s, err, sizeof(err)) == 0) {
                keep = s.handled && !s.deleting;
                svc_free(&s);
            }
            if (!keep) {
                log_info("releasing orphaned lease %s", r->leases[i]->owner);
                if (release_lease(c, r->leases[i]->owner, err, sizeof(err)) != DONE)
                    rc = -1;
            }
        }
        if (r->next_page_token[0]) {
            token = strdup(r->next_page_token);
            if (!token)
                oom();
        }
        protobuf_c_message_free_unpacked(resp, NULL);
    } while (token);
    return rc;
}

/* Lists everything, re-claims carried addresses, allocates pending Services,
 * releases orphans. Returns -1 (retry later) if any step could not finish:
 * no new allocation happens before every carried address is re-claimed. */
static int sync_all(struct ctl *c)
{
    char err[800];
    stop_watches(c);
    /* Every lease up to this revision has its Service in the list below,
     * unless the Service is gone. */
    uint64_t before = ipamd_revision(c);
    if (get_config(c, err, sizeof(err)) != 0 || list_services(c, err, sizeof(err)) != 0) {
        log_warn("start-up: %s", err);
        return -1;
    }
    strmap_free(&c->applied);
    atomic_store(&c->ipamd_lost, 0);
    size_t i = 0, claimed = 0, pending = 0;
    const char *k;
    void *v;
    /* 1. Re-claim: every Service that carries an address. */
    while (strmap_next(&c->svcs, &i, &k, &v)) {
        if (!has_address(v, &c->o.svc))
            continue;
        if (reconcile(c, k) == RETRY && atomic_load(&c->ipamd_lost))
            return -1;
        claimed++;
    }
    if (atomic_load(&c->ipamd_lost))
        return -1;
    /* 2. Pending Services, through the queue (after every claim). */
    i = 0;
    while (strmap_next(&c->svcs, &i, &k, &v))
        if (!has_address(v, &c->o.svc)) {
            q_add(&c->q, k);
            pending++;
        }
    while (c->q.rcount) {
        process(c, q_pop(&c->q));
        if (atomic_load(&c->ipamd_lost))
            return -1;
    }
    /* 3. Orphans. */
    if (release_orphans(c, before) != 0)
        return -1;
    c->resync_rev = before;
    log_info("synchronised: %zu Services re-claimed, %zu others reconciled", claimed, pending);
    start_watches(c);
    c->need_relist = false;
    return 0;
}

/* ---- the loop --------------------------------------------------------- */

struct ctl *ctl_new(const struct ctl_opts *o, struct kube *kube, char **err)
{
    struct ctl *c = calloc(1, sizeof(*c));
    if (!c)
        oom();
    c->o = *o;
    c->o.ipamd_tls = NULL; /* Used here only; the caller's may not outlive this. */
    c->kube = kube;
    c->ipam = o->ipamd_tls ? ipam_client_open_tls(o->ipamd, o->ipamd_tls, err)
                           : ipam_client_open(o->ipamd);
    if (!c->ipam) {
        free(c);
        return NULL;
    }
    ipam_client_set_timeout(c->ipam, 10000);
    kv_config_parse(NULL, o->owner_prefix, &c->cfg);
    pthread_mutex_init(&c->stream_mu, NULL);
    atomic_init(&c->ipamd_lost, 1);
    atomic_init(&c->stopping, 0);
    return c;
}

void ctl_wakeup(struct ctl *c)
{
    kube_wakeup(c->kube);
}

void ctl_free(struct ctl *c)
{
    if (!c)
        return;
    atomic_store(&c->stopping, 1);
    if (c->watcher_started) {
        pthread_mutex_lock(&c->stream_mu);
        if (c->stream)
            ipam_stream_cancel(c->stream);
        pthread_mutex_unlock(&c->stream_mu);
        pthread_join(c->watcher, NULL);
    }
    stop_watches(c);
    size_t i = 0;
    const char *k;
    void *v;
    while (strmap_next(&c->svcs, &i, &k, &v))
        cJSON_Delete(v);
    strmap_free(&c->svcs);
    i = 0;
    while (strmap_next(&c->warned, &i, &k, &v))
        free(v);
    strmap_free(&c->warned);
    i = 0;
    while (strmap_next(&c->done_rv, &i, &k, &v))
        free(v);
    strmap_free(&c->done_rv);
    strmap_free(&c->applied);
    q_free(&c->q);
    kv_config_free(&c->cfg);
    free(c->svc_rv);
    free(c->cm_rv);
    ipam_client_close(c->ipam);
    pthread_mutex_destroy(&c->stream_mu);
    free(c);
}

/* Waits until ipamd answers its health check, or *stop. */
static bool ipamd_ready(struct ctl *c, volatile sig_atomic_t *stop)
{
    int64_t backoff = 100;
    while (!*stop) {
        int serving = 0;
        char *msg = NULL;
        int rc = ipam_client_health(c->ipam, "", &serving, &msg);
        free(msg);
        if (rc == GRPC_STATUS_OK && serving == 1)
            return true;
        kube_run(c->kube, (int)backoff); /* Waits, and keeps nothing else waiting. */
        backoff = backoff * 2 < 1000 ? backoff * 2 : 1000;
    }
    return false;
}

/* One turn of the loop from the cache: serves the API streams until `limit` ms
 * have passed (negative: no limit of its own; at most a minute) or the first
 * retry falls due, at once if work is ready; then processes a turn's share of
 * the ready queue. */
static void serve_turn(struct ctl *c, volatile sig_atomic_t *stop, int64_t limit)
{
    int64_t wait = q_promote(&c->q);
    if (limit >= 0 && (wait < 0 || limit < wait))
        wait = limit;
    if (c->q.rcount)
        wait = 0;
    kube_run(c->kube, wait < 0 ? 60000 : (int)(wait > 60000 ? 60000 : wait));
    am_queue_depth(c->q.rcount + c->q.dcount); /* what the watches just added */
    for (int n = 0; n < ITEMS_PER_TURN && c->q.rcount && !*stop; n++) {
        if (atomic_load(&c->ipamd_lost))
            break; /* Re-claim first. */
        process(c, q_pop(&c->q));
    }
}

int ctl_run(struct ctl *c, volatile sig_atomic_t *stop)
{
    if (pthread_create(&c->watcher, NULL, ipamd_watcher, c) != 0) {
        log_error("cannot start the ipamd watcher: %s", strerror(errno));
        return 1;
    }
    c->watcher_started = true;
    bool synced = false;
    int64_t retry_at = 0, backoff = FIRST_BACKOFF_MS;
    c->next_resync = now_ms() + (int64_t)c->o.resync_seconds * 1000;
    while (!*stop) {
        if (!synced || atomic_load(&c->ipamd_lost) || c->need_relist) {
            /* A relist the Service watch asked for waits out its backoff
             * (an ipamd restart does not: re-claiming is urgent). */
            int64_t gate = retry_at;
            if (synced && !atomic_load(&c->ipamd_lost) && c->svc_wb.retry_at > gate)
                gate = c->svc_wb.retry_at;
            int64_t wait = gate - now_ms();
            if (wait > 0) {
                /* Meanwhile the cache still serves what is queued (a ConfigMap
                 * change, a retry): only Service events wait for the relist. */
                if (synced && !atomic_load(&c->ipamd_lost))
                    serve_turn(c, stop, wait);
                else
                    kube_run(c->kube, (int)wait);
                continue;
            }
            if (!ipamd_ready(c, stop))
                break;
            synced = sync_all(c) == 0;
            if (!synced) {
                retry_at = now_ms() + backoff;
                backoff = backoff * 2 < MAX_BACKOFF_MS ? backoff * 2 : MAX_BACKOFF_MS;
            } else {
                backoff = FIRST_BACKOFF_MS;
            }
            continue;
        }
        /* A broken stream resumes from the last version seen, when its
         * backoff allows; the ConfigMap is re-read whole first. */
        if (c->cm_watch_dead && c->cm_watch) {
            kube_watch_close(c->cm_watch); /* it ended with an ERROR event */
            c->cm_watch = NULL;
        }
        if (c->svc_watch_dead && c->svc_watch) {
            kube_watch_close(c->svc_watch);
            c->svc_watch = NULL;
        }
        int64_t now = now_ms();
        bool cm_due = c->cm_watch_dead && now >= c->cm_wb.retry_at;
        bool svc_due = c->svc_watch_dead && now >= c->svc_wb.retry_at;
        if (cm_due) {
            char err[600];
            if (get_config(c, err, sizeof(err)) != 0) {
                wb_opened(&c->cm_wb); /* counts as a refused attempt */
                log_warn("%s: retrying in %.1f s", err, (double)wb_ended(&c->cm_wb, 0) / 1000);
            }
        }
        if (cm_due || svc_due)
            start_watches(c); /* opens those due */
        int64_t wait = -1;
        /* Wake up for the first watch due again. */
        int64_t due = INT64_MAX;
        if (c->svc_watch_dead)
            due = c->svc_wb.retry_at;
        if (c->cm_watch_dead && c->cm_wb.retry_at < due)
            due = c->cm_wb.retry_at;
        if (due != INT64_MAX) {
            int64_t d = due > now_ms() ? due - now_ms() : 0;
            if (wait < 0 || d < wait)
                wait = d;
        }
        int64_t to_resync = c->next_resync - now_ms();
        if (c->o.resync_seconds > 0 && to_resync <= 0) {
            size_t i = 0;
            const char *k;
            void *v;
            while (strmap_next(&c->svcs, &i, &k, &v))
                q_add(&c->q, k);
            /* Leases older than the previous resync had a whole period for
             * their Service to reach the cache. */
            uint64_t now_rev = ipamd_revision(c);
            release_orphans(c, c->resync_rev);
            c->resync_rev = now_rev;
            c->next_resync = now_ms() + (int64_t)c->o.resync_seconds * 1000;
            to_resync = c->o.resync_seconds * 1000;
        }
        if (c->o.resync_seconds > 0 && (wait < 0 || to_resync < wait))
            wait = to_resync;
        serve_turn(c, stop, wait);
    }
    atomic_store(&c->stopping, 1);
    return 0;
}
