/* gRPC transport: completion-queue loop, group commit, unary and streams. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "api.h"
#include "grpc/health/v1/health.pb-c.h"
#include "ipam/log.h"
#include "metrics.h"
#include "reflection.h"

#define SLOTS_PER_METHOD 64
#define MAX_DRAIN 1024
#define WATCH_MAX_EVENTS 1024
#define WATCH_MAX_BYTES (256 * 1024)
#define STOP_GRACE_SECONDS 5

/* Limits that keep one client from exhausting ipamd; see server_create. */
#define MAX_RECEIVE_BYTES (4 * 1024 * 1024)
#define MAX_STREAMS_PER_CONNECTION 1000
#define MAX_METADATA_BYTES (8 * 1024)
#define HANDSHAKE_TIMEOUT_MS 20000
#define KEEPALIVE_TIME_MS 60000
#define KEEPALIVE_TIMEOUT_MS 20000
#define MAX_CONNECTION_IDLE_MS (15 * 60 * 1000)
#define CLIENT_PING_MIN_MS 5000
#define MEMORY_QUOTA_BYTES (512 * 1024 * 1024)
#define MAX_PEM_BYTES (1024 * 1024)

struct server;

struct tag {
    void (*fn)(struct server *srv, struct tag *t, bool ok);
};

/* One outstanding request for calls of a registered method. */
struct slot {
    struct tag tag;
    const struct api_method *m;
    void *handle;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
};

/* The outstanding request for calls of unknown methods. */
struct generic_slot {
    struct tag tag;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
};

/* A unary call from arrival to its answer. */
struct rpc {
    struct tag tag;
    struct rpc *next;
    grpc_call *call;
    const struct api_method *m;
    ProtobufCMessage *req;
    grpc_status_code code;
    char msg[512];
    grpc_byte_buffer *out;
    grpc_slice details;
    int cancelled;
    struct timespec t0; /* arrival */
};

/* A Watch or Health/Watch stream. */
struct watcher {
    struct tag send_tag, close_tag, status_tag;
    struct watcher *next, *prev;
    struct server *srv;
    grpc_call *call;
    bool health;
    uint64_t next_rev;
    int last_health;
    bool sending, closed, finishing, status_started, sent_initial;
    grpc_status_code fin_code;
    char fin_msg[256];
    int refs;
    int cancelled;
    grpc_byte_buffer *out;
    grpc_slice details;
};

struct server {
    struct state *state;
    grpc_server *server;
    grpc_completion_queue *cq;
    struct api_ctx ctx;
    struct slot *slots;
    size_t nslots;
    struct generic_slot generic;
    struct rpc *writes, **writes_tail;
    struct rpc *reads, **reads_tail;
    struct watcher *watchers;
    size_t nwatchers, max_watchers;
    struct reflector *reflectors;
    size_t nreflectors;
    bool watchers_full_logged;
    atomic_int stop;
    atomic_int scrape_waiting; /* a scrape wants mu: the core lets it in */
    bool stopping, shut_down;
    struct tag shutdown_tag;
    gpr_timespec grace;
    /* Held by the loop while it serves a batch, and by a metrics scrape:
     * the scrape thread reads the state and the counts only under it. */
    pthread_mutex_t mu;
    struct srv_metrics metrics;
    struct ipam_metrics_server *http;
};

/* ---- helpers ---------------------------------------------------------- */

static grpc_byte_buffer *buffer_from(const uint8_t *data, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static grpc_byte_buffer *pack_buffer(const ProtobufCMessage *m)
{
    size_t len;
    uint8_t *data = pb_pack(m, &len);
    grpc_byte_buffer *bb = buffer_from(data, len);
    free(data);
    return bb;
}

/* Decodes a request; NULL with why set (or empty: undecodable) on failure. */
static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb,
                                char *why, size_t whylen)
{
    grpc_byte_buffer_reader r;
    why[0] = 0;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    ProtobufCMessage *m = NULL;
    if (pb_validate(d, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), why, whylen) == 0)
        m = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    grpc_byte_buffer_reader_destroy(&r);
    return m;
}

static struct gpr_timespec now_real(void)
{
    return gpr_now(GPR_CLOCK_REALTIME);
}

/* ---- unary answers ---------------------------------------------------- */

static void rpc_done(struct server *srv, struct tag *t, bool ok)
{
    (void)srv;
    (void)ok;
    struct rpc *r = (struct rpc *)t;
    if (r->out)
        grpc_byte_buffer_destroy(r->out);
    grpc_slice_unref(r->details);
    if (r->req)
        protobuf_c_message_free_unpacked(r->req, NULL);
    grpc_call_unref(r->call);
    free(r);
}

static struct rpc *rpc_new(grpc_call *call, const struct api_method *m)
{
    struct rpc *r = calloc(1, sizeof(*r));
    if (!r) {
        log_error("out of memory");
        abort();
    }
    r->tag.fn = rpc_done;
    r->call = call;
    r->m = m;
    r->details = grpc_empty_slice();
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    return r;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void rpc_fail(struct rpc *r, grpc_status_code code, const char *msg)
{
    r->code = code;
    snprintf(r->msg, sizeof(r->msg), "%.500s", msg);
    if (r->out) {
        grpc_byte_buffer_destroy(r->out);
        r->out = NULL;
    }
}

static void rpc_send(struct server *srv, struct rpc *r)
{
    srv_metrics_rpc(&srv->metrics, r->m ? (size_t)(r->m - api_methods) : SIZE_MAX, r->code,
                    seconds_since(&r->t0));
    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (r->out && r->code == GRPC_STATUS_OK) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = r->out;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = r->code;
    if (r->msg[0]) {
        grpc_slice_unref(r->details);
        r->details = grpc_slice_from_copied_string(r->msg);
        ops[n].data.send_status_from_server.status_details = &r->details;
    }
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &r->cancelled;
    grpc_call_error e = grpc_call_start_batch(r->call, ops, n, &r->tag, NULL);
    if (e != GRPC_CALL_OK) {
        log_error("cannot answer %s: call error %d", r->m ? r->m->path : "call", (int)e);
        rpc_done(NULL, &r->tag, false);
    }
}

/* Runs a handler and keeps its packed reply or its error in r. */
static void rpc_run(struct server *srv, struct rpc *r)
{
    struct ipam_status st = {IPAM_OK, ""};
    ProtobufCMessage *reply = NULL;
    enum ipam_err e = r->m->handler(&srv->ctx, r->req, &reply, &st);
    r->code = ipam_err_status(e);
    if (e == IPAM_OK) {
        r->out = pack_buffer(reply);
    } else {
        snprintf(r->msg, sizeof(r->msg), "%s", st.msg);
        if (r->m->kind == API_WRITE)
            log_debug("%s refused: %s", r->m->path, st.msg);
    }
}

/* ---- streams ---------------------------------------------------------- */

/* Starts a batch on a stream whose completions are counted in *refs (the
 * stream is freed when none is pending); false, with nothing pending, when
 * it cannot be started. */
static bool counted_batch(grpc_call *call, int *refs, grpc_op *ops, size_t n, struct tag *t)
{
    ++*refs;
    if (grpc_call_start_batch(call, ops, n, t, NULL) == GRPC_CALL_OK)
        return true;
    --*refs;
    return false;
}

static void watcher_pump(struct watcher *w);

static void watcher_maybe_free(struct watcher *w)
{
    if (w->refs)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        w->srv->watchers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->srv->nwatchers--;
    grpc_slice_unref(w->details);
    grpc_call_unref(w->call);
    free(w);
}

static void watcher_sent(struct server *srv, struct tag *t, bool ok)
{
    (void)srv;
    struct watcher *w = (void *)((char *)t - offsetof(struct watcher, send_tag));
    w->refs--;
    w->sending = false;
    grpc_byte_buffer_destroy(w->out);
    w->out = NULL;
    if (!ok)
        w->closed = true;
    watcher_pump(w);
    watcher_maybe_free(w);
}

static void watcher_closed(struct server *srv, struct tag *t, bool ok)
{
    (void)srv;
    (void)ok;
    struct watcher *w = (void *)((char *)t - offsetof(struct watcher, close_tag));
    w->refs--;
    w->closed = true;
    watcher_maybe_free(w);
}

static void watcher_status_done(struct server *srv, struct tag *t, bool ok)
{
    (void)srv;
    (void)ok;
    struct watcher *w = (void *)((char *)t - offsetof(struct watcher, status_tag));
    w->refs--;
    watcher_maybe_free(w);
}

static void watcher_send(struct watcher *w, grpc_byte_buffer *bb)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (!w->sent_initial) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        w->sent_initial = true;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = bb;
    w->out = bb;
    w->sending = true;
    if (!counted_batch(w->call, &w->refs, ops, n, &w->send_tag)) {
        w->sending = false;
        w->closed = true;
        grpc_byte_buffer_destroy(bb);
        w->out = NULL;
    }
}

static void watcher_send_status(struct watcher *w)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    w->status_started = true;
    if (!w->sent_initial) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        w->sent_initial = true;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = w->fin_code;
    w->details = grpc_slice_from_copied_string(w->fin_msg);
    ops[n++].data.send_status_from_server.status_details = &w->details;
    counted_batch(w->call, &w->refs, ops, n, &w->status_tag);
}

static void watcher_finish(struct watcher *w, grpc_status_code code, const char *msg)
{
    if (w->finishing)
        return;
    w->finishing = true;
    w->fin_code = code;
    snprintf(w->fin_msg, sizeof(w->fin_msg), "%s", msg);
    watcher_pump(w);
}

static void put_varint(uint8_t **p, uint64_t v)
{
    while (v >= 0x80) {
        *(*p)++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *(*p)++ = (uint8_t)v;
}

/* Encodes a WatchResponse by hand: its events are already packed, so they
 * are copied in as field 3 without decoding them again. */
static grpc_byte_buffer *watch_message(struct server *srv, struct watcher *w, bool created)
{
    size_t cap = 32, count = 0;
    bool gone;
    const struct event *e;
    for (uint64_t r = w->next_rev; count < WATCH_MAX_EVENTS && cap < WATCH_MAX_BYTES &&
                                   (e = st_event_from(srv->state, r, &gone));
         r++, count++)
        cap += e->len + 11;
    if (!created && !count)
        return NULL;
    uint8_t *buf = malloc(cap), *p = buf;
    if (!buf) {
        log_error("out of memory");
        abort();
    }
    if (created) {
        *p++ = 0x08; /* field 1, created */
        *p++ = 1;
    }
    *p++ = 0x10; /* field 2, revision */
    put_varint(&p, st_committed(srv->state));
    for (size_t i = 0; i < count; i++) {
        e = st_event_from(srv->state, w->next_rev++, &gone);
        *p++ = 0x1a; /* field 3, events */
        put_varint(&p, e->len);
        memcpy(p, e->data, e->len);
        p += e->len;
    }
    grpc_byte_buffer *bb = buffer_from(buf, (size_t)(p - buf));
    free(buf);
    return bb;
}

/* Ends a Watch whose next event has left the ring. A consumer that stopped
 * reading has a send stuck in flow control, which the status would queue
 * behind: its call is cancelled with the status instead, which discards what
 * is queued, so a stuck client holds neither ring slots nor send buffers. */
static bool watcher_fell_behind(struct watcher *w)
{
    bool gone;
    if (w->health || w->finishing || st_event_from(w->srv->state, w->next_rev, &gone) || !gone)
        return false;
    char msg[200];
    snprintf(msg, sizeof(msg),
             "watch fell behind: revision %llu is no longer held; list again and "
             "watch from the list's revision + 1",
             (unsigned long long)w->next_rev);
    if (!w->sending) {
        log_warn("dropping a Watch stream: %s", msg);
        watcher_finish(w, GRPC_STATUS_OUT_OF_RANGE, msg);
        return true;
    }
    log_warn("dropping a Watch stream that stopped reading: %s", msg);
    w->finishing = true;
    w->status_started = true;
    grpc_call_cancel_with_status(w->call, GRPC_STATUS_OUT_OF_RANGE, msg, NULL);
    return true;
}

static void watcher_pump(struct watcher *w)
{
    struct server *srv = w->srv;
    if (w->closed || w->status_started || watcher_fell_behind(w) || w->sending)
        return;
    if (w->health) {
        int now = srv->ctx.serving
                      ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
        if (now != w->last_health) {
            Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
            r.status = now;
            w->last_health = now;
            watcher_send(w, pack_buffer(&r.base));
            return;
        }
    } else if (!w->finishing) {
        grpc_byte_buffer *bb = watch_message(srv, w, false);
        if (bb) {
            watcher_send(w, bb);
            return;
        }
    }
    if (w->finishing)
        watcher_send_status(w);
}

/* Turns a Watch or Health/Watch call into a stream, or refuses it. */
static void watcher_start(struct server *srv, struct rpc *r)
{
    uint64_t from = 0;
    if (srv->nwatchers + srv->nreflectors >= srv->max_watchers) {
        snprintf(r->msg, sizeof(r->msg),
                 "too many open streams: %zu Watch, Health/Watch and reflection streams are "
                 "open, the --max-watchers limit; try again later",
                 srv->nwatchers + srv->nreflectors);
        /* Once per burst: a client hammering the limit must not flood the log. */
        if (!srv->watchers_full_logged)
            log_warn("refusing %s streams: %s", r->m->path, r->msg);
        srv->watchers_full_logged = true;
        r->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        rpc_send(srv, r);
        return;
    }
    if (r->m->kind == API_WATCH) {
        const Ipam__V1__WatchRequest *req = (const void *)r->req;
        uint64_t committed = st_committed(srv->state);
        bool gone = false;
        from = req->from_revision ? req->from_revision : committed + 1;
        if (from <= committed)
            st_event_from(srv->state, from, &gone);
        if (gone) {
            snprintf(r->msg, sizeof(r->msg),
                     "revision %llu is too old to replay (current %llu): list again and watch "
                     "from the list's revision + 1",
                     (unsigned long long)from, (unsigned long long)committed);
            r->code = GRPC_STATUS_OUT_OF_RANGE;
            rpc_send(srv, r);
            return;
        }
    } else {
        const Grpc__Health__V1__HealthCheckRequest *req = (const void *)r->req;
        if (!api_health_known(req->service)) {
            snprintf(r->msg, sizeof(r->msg), "unknown service `%.64s'", req->service);
            r->code = GRPC_STATUS_NOT_FOUND;
            rpc_send(srv, r);
            return;
        }
    }
    struct watcher *w = calloc(1, sizeof(*w));
    if (!w) {
        log_error("out of memory");
        abort();
    }
    w->send_tag.fn = watcher_sent;
    w->close_tag.fn = watcher_closed;
    w->status_tag.fn = watcher_status_done;
    w->srv = srv;
    w->call = r->call;
    w->health = r->m->kind == API_HEALTH_WATCH;
    w->next_rev = from;
    w->last_health = -1;
    w->details = grpc_empty_slice();
    w->next = srv->watchers;
    if (srv->watchers)
        srv->watchers->prev = w;
    srv->watchers = w;
    srv->nwatchers++;
    srv->watchers_full_logged = false;
    r->call = NULL;
    protobuf_c_message_free_unpacked(r->req, NULL);
    grpc_slice_unref(r->details);
    free(r);

    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &w->cancelled;
    if (!counted_batch(w->call, &w->refs, &op, 1, &w->close_tag))
        w->closed = true;
    if (!w->health && !w->closed)
        watcher_send(w, watch_message(srv, w, true));
    else
        watcher_pump(w);
    watcher_maybe_free(w);
}

/* ---- server reflection ------------------------------------------------ */

/* One ServerReflectionInfo stream: a request is read, answered, then the
 * next is read, until the client half-closes (then OK) or goes away. Only
 * one operation of each kind is ever pending. The streams count against
 * --max-watchers with Watch streams. */
struct reflector {
    struct tag recv_tag, send_tag, close_tag, status_tag;
    struct reflector *next, *prev;
    struct server *srv;
    grpc_call *call;
    grpc_byte_buffer *in, *out;
    grpc_slice details;
    int cancelled;
    int refs;
    bool finishing;
};

static void refl_maybe_free(struct reflector *f)
{
    if (f->refs)
        return;
    if (f->prev)
        f->prev->next = f->next;
    else
        f->srv->reflectors = f->next;
    if (f->next)
        f->next->prev = f->prev;
    f->srv->nreflectors--;
    if (f->in)
        grpc_byte_buffer_destroy(f->in);
    if (f->out)
        grpc_byte_buffer_destroy(f->out);
    grpc_slice_unref(f->details);
    grpc_call_unref(f->call);
    free(f);
}

static bool refl_batch(struct reflector *f, grpc_op *ops, size_t n, struct tag *t)
{
    return counted_batch(f->call, &f->refs, ops, n, t);
}

static void refl_finish(struct reflector *f, grpc_status_code code, const char *msg)
{
    if (f->finishing)
        return;
    f->finishing = true;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = code;
    f->details = grpc_slice_from_copied_string(msg);
    op.data.send_status_from_server.status_details = &f->details;
    refl_batch(f, &op, 1, &f->status_tag);
}

static void refl_recv(struct reflector *f)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &f->in;
    if (!refl_batch(f, &op, 1, &f->recv_tag))
        refl_finish(f, GRPC_STATUS_INTERNAL, "cannot read the next request");
}

static void refl_received(struct server *srv, struct tag *t, bool ok)
{
    struct reflector *f = (void *)((char *)t - offsetof(struct reflector, recv_tag));
    f->refs--;
    if (!ok || !f->in) {
        /* Half-closed by the client (every request answered), or gone. */
        refl_finish(f, GRPC_STATUS_OK, "");
    } else {
        char why[300];
        ProtobufCMessage *req = decode(&grpc__reflection__v1__server_reflection_request__descriptor,
                                       f->in, why, sizeof(why));
        grpc_byte_buffer_destroy(f->in);
        f->in = NULL;
        if (!req) {
            char msg[400];
            snprintf(msg, sizeof(msg),
                     "cannot decode the request as grpc.reflection.v1.ServerReflectionRequest%s%s",
                     why[0] ? ": " : "", why);
            refl_finish(f, GRPC_STATUS_INVALID_ARGUMENT, msg);
        } else {
            size_t len;
            uint8_t *data = refl_answer((const void *)req, &len);
            protobuf_c_message_free_unpacked(req, NULL);
            f->out = buffer_from(data, len);
            free(data);
            grpc_op op;
            memset(&op, 0, sizeof(op));
            op.op = GRPC_OP_SEND_MESSAGE;
            op.data.send_message.send_message = f->out;
            if (!refl_batch(f, &op, 1, &f->send_tag))
                refl_finish(f, GRPC_STATUS_INTERNAL, "cannot send the answer");
        }
    }
    (void)srv;
    refl_maybe_free(f);
}

static void refl_sent(struct server *srv, struct tag *t, bool ok)
{
    (void)srv;
    struct reflector *f = (void *)((char *)t - offsetof(struct reflector, send_tag));
    f->refs--;
    grpc_byte_buffer_destroy(f->out);
    f->out = NULL;
    if (ok && !f->finishing)
        refl_recv(f);
    refl_maybe_free(f);
}

static void refl_closed(struct server *srv, struct tag *t, bool ok)
{
    (void)srv;
    (void)ok;
    struct reflector *f = (void *)((char *)t - offsetof(struct reflector, close_tag));
    f->refs--;
    refl_maybe_free(f);
}

static void refl_status_done(struct server *srv, struct tag *t, bool ok)
{
    (void)srv;
    (void)ok;
    struct reflector *f = (void *)((char *)t - offsetof(struct reflector, status_tag));
    f->refs--;
    refl_maybe_free(f);
}

static void refl_start(struct server *srv, grpc_call *call, const struct api_method *m)
{
    if (srv->nwatchers + srv->nreflectors >= srv->max_watchers || srv->stopping) {
        struct rpc *r = rpc_new(call, m);
        r->code = srv->stopping ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(r->msg, sizeof(r->msg), "%s",
                 srv->stopping ? "ipamd is shutting down"
                               : "too many open streams (the --max-watchers limit); try again "
                                 "later");
        rpc_send(srv, r);
        return;
    }
    struct reflector *f = calloc(1, sizeof(*f));
    if (!f) {
        log_error("out of memory");
        abort();
    }
    f->recv_tag.fn = refl_received;
    f->send_tag.fn = refl_sent;
    f->close_tag.fn = refl_closed;
    f->status_tag.fn = refl_status_done;
    f->srv = srv;
    f->call = call;
    f->details = grpc_empty_slice();
    f->next = srv->reflectors;
    if (srv->reflectors)
        srv->reflectors->prev = f;
    srv->reflectors = f;
    srv->nreflectors++;

    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[0].data.recv_close_on_server.cancelled = &f->cancelled;
    refl_batch(f, ops, 1, &f->close_tag);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &f->in;
    if (!refl_batch(f, ops, 2, &f->recv_tag))
        refl_finish(f, GRPC_STATUS_INTERNAL, "cannot start the stream");
    refl_maybe_free(f);
}

/* ---- arrivals --------------------------------------------------------- */

static void slot_arm(struct server *srv, struct slot *s)
{
    grpc_metadata_array_init(&s->md);
    s->payload = NULL;
    grpc_call_error e = grpc_server_request_registered_call(
        srv->server, s->handle, &s->call, &s->deadline, &s->md,
        s->m->kind == API_REFLECTION ? NULL : &s->payload, srv->cq, srv->cq, &s->tag);
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&s->md);
        log_error("cannot request calls for %s: call error %d", s->m->path, (int)e);
    }
}

static void on_call(struct server *srv, struct tag *t, bool ok)
{
    struct slot *s = (struct slot *)t;
    grpc_metadata_array_destroy(&s->md);
    if (!ok)
        return; /* The server is shutting down: this slot is done. */
    grpc_call *call = s->call;
    grpc_byte_buffer *payload = s->payload;
    s->call = NULL;
    s->payload = NULL;
    if (!srv->stopping)
        slot_arm(srv, s);

    if (s->m->kind == API_REFLECTION) {
        refl_start(srv, call, s->m);
        return;
    }
    struct rpc *r = rpc_new(call, s->m);
    char why[300] = "";
    if (payload) {
        r->req = decode(s->m->input, payload, why, sizeof(why));
        grpc_byte_buffer_destroy(payload);
    }
    if (!r->req) {
        char msg[500];
        snprintf(msg, sizeof(msg), "cannot decode the request of %s as %s%s%s", s->m->path,
                 s->m->input->name, why[0] ? ": " : "", why);
        rpc_fail(r, GRPC_STATUS_INVALID_ARGUMENT, msg);
        rpc_send(srv, r);
        return;
    }
    if (s->m->kind == API_WRITE) {
        rpc_run(srv, r);
        *srv->writes_tail = r;
        srv->writes_tail = &r->next;
    } else {
        *srv->reads_tail = r;
        srv->reads_tail = &r->next;
    }
}

static void generic_arm(struct server *srv)
{
    struct generic_slot *g = &srv->generic;
    grpc_call_details_init(&g->details);
    grpc_metadata_array_init(&g->md);
    if (grpc_server_request_call(srv->server, &g->call, &g->details, &g->md, srv->cq, srv->cq,
                                 &g->tag) != GRPC_CALL_OK) {
        grpc_call_details_destroy(&g->details);
        grpc_metadata_array_destroy(&g->md);
    }
}

static void on_unknown_call(struct server *srv, struct tag *t, bool ok)
{
    struct generic_slot *g = (struct generic_slot *)t;
    if (ok) {
        struct rpc *r = rpc_new(g->call, NULL);
        char *method = grpc_slice_to_c_string(g->details.method);
        snprintf(r->msg, sizeof(r->msg), "unknown method %.200s", method);
        gpr_free(method);
        r->code = GRPC_STATUS_UNIMPLEMENTED;
        rpc_send(srv, r);
    }
    grpc_call_details_destroy(&g->details);
    grpc_metadata_array_destroy(&g->md);
    if (ok && !srv->stopping)
        generic_arm(srv);
}

static void on_shutdown(struct server *srv, struct tag *t, bool ok)
{
    (void)t;
    (void)ok;
    srv->shut_down = true;
}

/* ---- the loop --------------------------------------------------------- */

/* Drops the leases that are due.  Run before a batch's calls are applied as
 * well as after: a call that arrives after a lease's expiry (say, while the
 * previous commit waited on the disk) finds it gone, and cannot renew, release
 * or be handed back a lease that is already past its time. */
static void expire_due(struct server *srv)
{
    if (!srv->stopping)
        srv->metrics.expired += st_expire(srv->state, now_real().tv_sec);
}

/* Commits what the drained calls changed, then answers them all: writes with
 * their replies (or UNAVAILABLE if the commit failed), reads run now against
 * durable state, streams start, and watchers get the new events. */
static void finish_batch(struct server *srv)
{
    expire_due(srv);
    char err[512] = "";
    bool dirty = st_dirty(srv->state);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool failed = st_commit(srv->state, err, sizeof(err)) != 0;
    if (dirty) {
        size_t batch = 0;
        for (struct rpc *r = srv->writes; r; r = r->next)
            batch++;
        ipam_hist_observe(&srv->metrics.commit_seconds, seconds_since(&t0));
        ipam_hist_observe(&srv->metrics.batch_size, (double)batch);
    }
    if (failed) {
        srv->metrics.commit_failures++;
        log_error("store commit failed, %s: the batch is refused", err);
    }
    for (struct rpc *r = srv->writes, *next; r; r = next) {
        next = r->next;
        if (failed) {
            char msg[600];
            snprintf(msg, sizeof(msg), "store unavailable: %s", err);
            rpc_fail(r, GRPC_STATUS_UNAVAILABLE, msg);
        }
        rpc_send(srv, r);
    }
    srv->writes = NULL;
    srv->writes_tail = &srv->writes;
    for (struct rpc *r = srv->reads, *next; r; r = next) {
        next = r->next;
        if (r->m->kind == API_READ) {
            rpc_run(srv, r);
            rpc_send(srv, r);
        } else {
            watcher_start(srv, r);
        }
    }
    srv->reads = NULL;
    srv->reads_tail = &srv->reads;
    arena_free(&srv->ctx.arena);
    for (struct watcher *w = srv->watchers, *next; w; w = next) {
        next = w->next;
        watcher_pump(w);
    }
}

static void begin_stop(struct server *srv)
{
    srv->stopping = true;
    srv->ctx.serving = false;
    srv->grace = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                              gpr_time_from_seconds(STOP_GRACE_SECONDS, GPR_TIMESPAN));
    log_info("stopping: no new calls; open streams are closed");
    for (struct watcher *w = srv->watchers, *next; w; w = next) {
        next = w->next;
        watcher_finish(w, GRPC_STATUS_UNAVAILABLE, "ipamd is shutting down");
    }
    /* A reflection stream may be waiting for its client's next request. */
    for (struct reflector *f = srv->reflectors; f; f = f->next)
        grpc_call_cancel_with_status(f->call, GRPC_STATUS_UNAVAILABLE, "ipamd is shutting down",
                                     NULL);
}

static void dispatch(struct server *srv, grpc_event ev)
{
    struct tag *t = ev.tag;
    t->fn(srv, t, ev.success != 0);
}

static gpr_timespec next_deadline(struct server *srv)
{
    if (srv->stopping)
        return srv->grace;
    int64_t exp = st_next_expiry(srv->state);
    if (!exp)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    gpr_timespec t = {exp, 0, GPR_CLOCK_REALTIME};
    return t;
}

void server_run(struct server *srv)
{
    bool cancelled = false;
    while (!srv->shut_down) {
        grpc_event ev = grpc_completion_queue_next(srv->cq, next_deadline(srv), NULL);
        /* Under saturation the core would relock mu at once, every time;
         * a waiting scrape goes first (it holds mu for microseconds). */
        while (atomic_load_explicit(&srv->scrape_waiting, memory_order_relaxed))
            sched_yield();
        pthread_mutex_lock(&srv->mu);
        expire_due(srv);
        if (ev.type == GRPC_OP_COMPLETE)
            dispatch(srv, ev);
        for (int n = 0; n < MAX_DRAIN && ev.type == GRPC_OP_COMPLETE; n++) {
            ev = grpc_completion_queue_next(srv->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
            if (ev.type == GRPC_OP_COMPLETE)
                dispatch(srv, ev);
        }
        finish_batch(srv);
        if (atomic_load(&srv->stop) && !srv->stopping)
            begin_stop(srv);
        if (srv->stopping && !srv->shut_down && !cancelled &&
            gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), srv->grace) >= 0) {
            log_warn("calls still open after %d s: cancelling them", STOP_GRACE_SECONDS);
            grpc_server_cancel_all_calls(srv->server);
            cancelled = true;
        }
        pthread_mutex_unlock(&srv->mu);
    }
}

/* A scrape, on the metrics server's thread. */
static void render_metrics(void *ctx, struct ipam_mbuf *b)
{
    struct server *srv = ctx;
    struct srv_gauges g = {0};
    atomic_fetch_add(&srv->scrape_waiting, 1);
    pthread_mutex_lock(&srv->mu);
    atomic_fetch_sub(&srv->scrape_waiting, 1);
    g.serving = srv->ctx.serving;
    for (const struct watcher *w = srv->watchers; w; w = w->next) {
        if (w->health)
            g.health_streams++;
        else
            g.watch_streams++;
    }
    g.reflection_streams = srv->nreflectors;
    srv_metrics_render(&srv->metrics, srv->state, &g, b);
    pthread_mutex_unlock(&srv->mu);
    /* /proc reads need no lock: the core thread never waits on them. */
    ipam_metrics_process(b);
}

void server_request_stop(struct server *srv)
{
    if (atomic_exchange(&srv->stop, 1))
        return;
    /* Fails every pending request slot at once, which wakes the loop. */
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
}

/* ---- listeners -------------------------------------------------------- */

static bool is_unix(const char *addr)
{
    return strncmp(addr, "unix:", 5) == 0;
}

static bool is_tcp(const char *addr)
{
    return !is_unix(addr) && strncmp(addr, "unix-abstract:", 14) != 0;
}

/* The host part of a "host:port" as gRPC splits it: "[v6]:port", "host:port",
 * or the whole string when it holds several colons and no brackets. */
static void split_host(const char *addr, char *host, size_t len)
{
    const char *start = addr;
    const char *end = addr + strlen(addr);
    const char *colon = strrchr(addr, ':');
    const char *bracket = strchr(addr, ']');
    if (addr[0] == '[' && bracket) {
        start = addr + 1;
        end = bracket;
    } else if (colon && strchr(addr, ':') == colon) {
        end = colon;
    }
    snprintf(host, len, "%.*s", (int)(end - start), start);
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        return ntohl(in->sin_addr.s_addr) >> 24 == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

/* 0 when every address the TCP listen address resolves to is a loopback
 * address; else -1 with err saying which one is not (or why it cannot tell:
 * what cannot be resolved cannot be shown to be local). */
static int check_loopback(const char *addr, char *err, size_t errlen)
{
    char host[256];
    split_host(addr, host, sizeof(host));
    if (host[0] == '\0') {
        snprintf(err, errlen,
                 "refusing to listen on `%s': no host means every interface, reachable from "
                 "other hosts; pass --allow-remote to allow that",
                 addr);
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen,
                 "refusing to listen on `%s': cannot resolve `%s' (%s) to check that it is a "
                 "loopback address; pass --allow-remote to listen anyway",
                 addr, host, gai_strerror(gai));
        return -1;
    }
    int rc = 0;
    for (const struct addrinfo *ai = res; ai && rc == 0; ai = ai->ai_next) {
        if (is_loopback(ai->ai_addr))
            continue;
        char num[INET6_ADDRSTRLEN + 1] = "?";
        getnameinfo(ai->ai_addr, ai->ai_addrlen, num, sizeof(num), NULL, 0, NI_NUMERICHOST);
        snprintf(err, errlen,
                 "refusing to listen on `%s': %s is not a loopback address, so other hosts "
                 "could reach ipamd; pass --allow-remote to allow that (with --tls-cert, "
                 "--tls-key and --tls-client-ca)",
                 addr, num);
        rc = -1;
    }
    freeaddrinfo(res);
    return rc;
}

struct tls_files {
    char *cert, *key, *client_ca; /* PEM text, NULL when not configured */
};

static void tls_free(struct tls_files *t)
{
    free(t->cert);
    if (t->key) {
        explicit_bzero(t->key, strlen(t->key));
        free(t->key);
    }
    free(t->client_ca);
    memset(t, 0, sizeof(*t));
}

/* Reads the PEM file given to option whole, as a string (the caller's). */
static char *read_pem(const char *option, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s `%s': %s", option, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_PEM_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_PEM_BYTES + 1, f) : 0;
    const char *why = NULL;
    if (!buf)
        why = "out of memory";
    else if (ferror(f))
        why = strerror(errno);
    else if (n > MAX_PEM_BYTES)
        why = "larger than 1 MiB";
    if (!why) {
        buf[n] = '\0';
        if (!strstr(buf, "-----BEGIN "))
            why = "not PEM (no -----BEGIN line)";
    }
    fclose(f);
    if (why) {
        snprintf(err, errlen, "cannot read %s `%s': %s", option, path, why);
        if (buf)
            explicit_bzero(buf, n);
        free(buf);
        return NULL;
    }
    return buf;
}

static int tls_load(const struct server_opts *o, struct tls_files *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (!o->tls_cert != !o->tls_key) {
        snprintf(err, errlen, "--tls-cert and --tls-key go together");
        return -1;
    }
    if (o->tls_client_ca && !o->tls_cert) {
        snprintf(err, errlen, "--tls-client-ca needs --tls-cert and --tls-key");
        return -1;
    }
    if (!o->tls_cert)
        return 0;
    t->cert = read_pem("--tls-cert", o->tls_cert, err, errlen);
    if (t->cert)
        t->key = read_pem("--tls-key", o->tls_key, err, errlen);
    if (t->key && o->tls_client_ca)
        t->client_ca = read_pem("--tls-client-ca", o->tls_client_ca, err, errlen);
    if (!t->key || (o->tls_client_ca && !t->client_ca)) {
        tls_free(t);
        return -1;
    }
    return 0;
}

int server_check(const struct server_opts *o, char *err, size_t errlen)
{
    if (o->socket_mode > 0777) {
        snprintf(err, errlen, "socket mode %04o is not a permission mode (0000 to 0777)",
                 o->socket_mode);
        return -1;
    }
    for (size_t i = 0; i < o->nlisten; i++) {
        if (is_tcp(o->listen[i]) && !o->allow_remote &&
            check_loopback(o->listen[i], err, errlen) != 0)
            return -1;
    }
    struct tls_files t;
    if (tls_load(o, &t, err, errlen) != 0)
        return -1;
    tls_free(&t);
    return 0;
}

/* Binds a Unix socket whose file never has more access than mode: bind()
 * creates it with 0777 & ~umask, so the umask is set for that call (no other
 * thread creates files while ipamd starts), then the result is checked. */
static int add_unix_port(grpc_server *gs, const char *addr, unsigned mode, char *err, size_t errlen)
{
    const char *path = addr + strlen("unix:");
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    mode_t old = umask((mode_t)(~mode & 0777));
    int port = grpc_server_add_http2_port(gs, addr, creds);
    umask(old);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        snprintf(err, errlen, "cannot listen on `%s' (in use, or not host:port / unix:/path)",
                 addr);
        return -1;
    }
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        snprintf(err, errlen, "cannot listen on `%s': cannot check the socket's mode: %s", addr,
                 strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(sb.st_mode) || (sb.st_mode & 07777) != mode) {
        snprintf(err, errlen, "cannot listen on `%s': the socket has mode %04o, not %04o", addr,
                 (unsigned)(sb.st_mode & 07777), mode);
        return -1;
    }
    return 0;
}

/* Binds a TCP listener, with TLS when tls is given, and says when it is open
 * to other hosts with less than mutual TLS. */
static int add_tcp_port(grpc_server *gs, const char *addr, grpc_server_credentials *tls,
                        bool mutual, bool maybe_remote, int *port, char *err, size_t errlen)
{
    grpc_server_credentials *creds = tls ? tls : grpc_insecure_server_credentials_create();
    *port = grpc_server_add_http2_port(gs, addr, creds);
    if (!tls)
        grpc_server_credentials_release(creds);
    if (*port == 0) {
        snprintf(err, errlen, "cannot listen on `%s' (in use, or not host:port / unix:/path%s)",
                 addr, tls ? ", or the TLS certificate and key do not load or do not match" : "");
        return -1;
    }
    char why[512];
    if (!maybe_remote || check_loopback(addr, why, sizeof(why)) == 0)
        return 0;
    if (!tls)
        log_warn("`%s' is reachable from other hosts without TLS: anyone who can connect may "
                 "change every pool and lease (see --tls-cert, --tls-key, --tls-client-ca)",
                 addr);
    else if (!mutual)
        log_warn("`%s' is reachable from other hosts and clients are not authenticated "
                 "(--tls-client-ca requires client certificates)",
                 addr);
    return 0;
}

static grpc_arg int_arg(const char *key, int value)
{
    grpc_arg a;
    memset(&a, 0, sizeof(a));
    a.type = GRPC_ARG_INTEGER;
    a.key = (char *)key;
    a.value.integer = value;
    return a;
}

/* Limits on what one client can make ipamd hold: message and metadata
 * sizes, streams per connection, connections that never finish their
 * handshake or sit idle, dead peers (keepalive pings while calls are open,
 * so a half-open Watch stream is noticed), and memory for gRPC's buffers.
 * Watch streams have their own cap (max_watchers). */
static grpc_server *create_grpc_server(void)
{
    grpc_resource_quota *quota = grpc_resource_quota_create("ipamd");
    grpc_resource_quota_resize(quota, MEMORY_QUOTA_BYTES);
    grpc_arg args[] = {
        int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0), /* A second ipamd on the same port must fail. */
        int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, MAX_RECEIVE_BYTES),
        int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, MAX_STREAMS_PER_CONNECTION),
        int_arg(GRPC_ARG_MAX_METADATA_SIZE, MAX_METADATA_BYTES),
        int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS),
        int_arg(GRPC_ARG_MAX_CONNECTION_IDLE_MS, MAX_CONNECTION_IDLE_MS),
        int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, KEEPALIVE_TIME_MS),
        int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, KEEPALIVE_TIMEOUT_MS),
        /* Clients' own keepalive pings, down to one every 5 s (as etcd allows),
         * also on connections with no call open: the core's default (one in
         * 5 min, 2 h without calls) answers a client pinging a quiet Watch
         * every 30 s with GOAWAY "too_many_pings", ending its stream. */
        int_arg(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, CLIENT_PING_MIN_MS),
        int_arg(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1),
        /* Keep pinging a Watch stream that has nothing to send. */
        int_arg(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0),
        {.type = GRPC_ARG_POINTER,
         .key = (char *)GRPC_ARG_RESOURCE_QUOTA,
         .value.pointer = {quota, grpc_resource_quota_arg_vtable()}},
    };
    grpc_channel_args cargs = {sizeof(args) / sizeof(args[0]), args};
    grpc_server *gs = grpc_server_create(&cargs, NULL);
    grpc_resource_quota_unref(quota);
    return gs;
}

/* Binds every listen address; -1 with err naming the first that fails. */
static int add_listeners(grpc_server *gs, const struct server_opts *o, char *err, size_t errlen)
{
    struct tls_files t;
    if (tls_load(o, &t, err, errlen) != 0)
        return -1;
    grpc_server_credentials *tls = NULL;
    if (t.cert) {
        /* The credentials copy the PEM text. */
        grpc_ssl_pem_key_cert_pair pair = {t.key, t.cert};
        tls = grpc_ssl_server_credentials_create_ex(
            t.client_ca, &pair, 1,
            t.client_ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                        : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
    }
    bool mutual = t.client_ca != NULL, any_tcp = false;
    tls_free(&t);
    int rc = 0;
    int *ports = calloc(o->nlisten + 1, sizeof(*ports));
    if (!ports) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    for (size_t i = 0; i < o->nlisten && rc == 0; i++) {
        const char *a = o->listen[i];
        if (is_unix(a)) {
            rc = add_unix_port(gs, a, o->socket_mode, err, errlen);
        } else if (is_tcp(a)) {
            any_tcp = true;
            rc = add_tcp_port(gs, a, tls, mutual, o->allow_remote, &ports[i], err, errlen);
        } else {
            grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
            if (grpc_server_add_http2_port(gs, a, creds) == 0) {
                snprintf(err, errlen, "cannot listen on `%s' (in use, or not a valid address)", a);
                rc = -1;
            }
            grpc_server_credentials_release(creds);
        }
    }
    for (size_t i = 0; i < o->nlisten && rc == 0; i++) {
        const char *a = o->listen[i];
        if (!is_tcp(a))
            log_info("serving on %s", a);
        else
            log_info("serving on %s (port %d, %s)", a, ports[i],
                     !tls     ? "plaintext"
                     : mutual ? "mutual TLS"
                              : "TLS");
    }
    free(ports);
    if (rc == 0 && tls && !any_tcp)
        log_warn("--tls-cert is unused: TLS is for TCP listeners, and every listener is a Unix "
                 "socket");
    if (tls)
        grpc_server_credentials_release(tls);
    return rc;
}

struct server *server_create(struct state *st, const struct server_opts *o, char *err,
                             size_t errlen)
{
    /* Every method of the service descriptors must have a handler entry. */
    const ProtobufCServiceDescriptor *svcs[] = {
        &ipam__v1__ipam__descriptor, &grpc__health__v1__health__descriptor,
        &grpc__reflection__v1__server_reflection__descriptor};
    for (size_t k = 0; k < sizeof(svcs) / sizeof(svcs[0]); k++)
        for (unsigned i = 0; i < svcs[k]->n_methods; i++) {
            char path[160];
            bool found = false;
            snprintf(path, sizeof(path), "/%s/%s", svcs[k]->name, svcs[k]->methods[i].name);
            for (size_t j = 0; j < api_nmethods; j++)
                found |= strcmp(api_methods[j].path, path) == 0;
            if (!found) {
                snprintf(err, errlen, "internal: no handler for %s", path);
                return NULL;
            }
        }
    if (server_check(o, err, errlen) != 0 || refl_init(err, errlen) != 0)
        return NULL;

    struct server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->state = st;
    srv->ctx.state = st;
    srv->ctx.serving = true;
    srv->writes_tail = &srv->writes;
    srv->reads_tail = &srv->reads;
    srv->shutdown_tag.fn = on_shutdown;
    srv->generic.tag.fn = on_unknown_call;
    srv->max_watchers = o->max_watchers;
    atomic_init(&srv->stop, 0);
    atomic_init(&srv->scrape_waiting, 0);
    pthread_mutex_init(&srv->mu, NULL);
    if (srv_metrics_init(&srv->metrics, api_nmethods) != 0) {
        snprintf(err, errlen, "out of memory");
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return NULL;
    }
    /* Before gRPC binds anything, so a bad address leaves nothing to undo. */
    if (o->metrics_listen) {
        char bound[80];
        srv->http = ipam_metrics_start(o->metrics_listen, render_metrics, srv, bound, sizeof(bound),
                                       err, errlen);
        if (!srv->http) {
            srv_metrics_free(&srv->metrics);
            pthread_mutex_destroy(&srv->mu);
            free(srv);
            return NULL;
        }
        log_info("metrics on http://%s/metrics", bound);
    }

    srv->server = create_grpc_server();
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);

    srv->nslots = api_nmethods * SLOTS_PER_METHOD;
    srv->slots = calloc(srv->nslots, sizeof(*srv->slots));
    for (size_t i = 0; i < api_nmethods; i++) {
        /* Streams of requests read them one by one; others get theirs at once. */
        void *h = grpc_server_register_method(srv->server, api_methods[i].path, NULL,
                                              api_methods[i].kind == API_REFLECTION
                                                  ? GRPC_SRM_PAYLOAD_NONE
                                                  : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                              0);
        for (size_t k = 0; k < SLOTS_PER_METHOD; k++) {
            struct slot *s = &srv->slots[i * SLOTS_PER_METHOD + k];
            s->tag.fn = on_call;
            s->m = &api_methods[i];
            s->handle = h;
        }
    }
    if (add_listeners(srv->server, o, err, errlen) != 0) {
        grpc_server_destroy(srv->server);
        grpc_completion_queue_shutdown(srv->cq);
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(srv->cq);
        free(srv->slots);
        ipam_metrics_stop(srv->http);
        srv_metrics_free(&srv->metrics);
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return NULL;
    }
    grpc_server_start(srv->server);
    for (size_t i = 0; i < srv->nslots; i++)
        slot_arm(srv, &srv->slots[i]);
    generic_arm(srv);
    return srv;
}

void server_destroy(struct server *srv)
{
    if (!srv)
        return;
    ipam_metrics_stop(srv->http);
    grpc_server_destroy(srv->server);
    grpc_completion_queue_shutdown(srv->cq);
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE)
            dispatch(srv, ev);
    }
    grpc_completion_queue_destroy(srv->cq);
    free(srv->slots);
    arena_free(&srv->ctx.arena);
    srv_metrics_free(&srv->metrics);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
    refl_free();
}
