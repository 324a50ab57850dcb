/* gRPC transport: completion-queue loop, group commit, unary and streams. */
#include "server.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"

#define SLOTS_PER_METHOD 64
#define MAX_DRAIN 1024
#define WATCH_MAX_EVENTS 1024
#define WATCH_MAX_BYTES (256 * 1024)
#define STOP_GRACE_SECONDS 5

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
    atomic_int stop;
    bool stopping, shut_down;
    struct tag shutdown_tag;
    gpr_timespec grace;
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

static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    grpc_byte_buffer_reader_destroy(&r);
    return m;
}

static struct gpr_timespec now_real(void) { return gpr_now(GPR_CLOCK_REALTIME); }

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
    return r;
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

static void rpc_send(struct rpc *r)
{
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
    w->refs++;
    if (grpc_call_start_batch(w->call, ops, n, &w->send_tag, NULL) != GRPC_CALL_OK) {
        w->refs--;
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
    w->refs++;
    if (grpc_call_start_batch(w->call, ops, n, &w->status_tag, NULL) != GRPC_CALL_OK)
        w->refs--;
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

static void watcher_pump(struct watcher *w)
{
    struct server *srv = w->srv;
    if (w->sending || w->closed || w->status_started)
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
        bool gone;
        if (!st_event_from(srv->state, w->next_rev, &gone) && gone) {
            char msg[200];
            snprintf(msg, sizeof(msg),
                     "watch fell behind: revision %llu is no longer held; list again and "
                     "watch from the list's revision + 1",
                     (unsigned long long)w->next_rev);
            log_warn("dropping a Watch stream: %s", msg);
            watcher_finish(w, GRPC_STATUS_OUT_OF_RANGE, msg);
            return;
        }
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
            rpc_send(r);
            return;
        }
    } else {
        const Grpc__Health__V1__HealthCheckRequest *req = (const void *)r->req;
        if (!api_health_known(req->service)) {
            snprintf(r->msg, sizeof(r->msg), "unknown service `%.64s'", req->service);
            r->code = GRPC_STATUS_NOT_FOUND;
            rpc_send(r);
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
    r->call = NULL;
    protobuf_c_message_free_unpacked(r->req, NULL);
    grpc_slice_unref(r->details);
    free(r);

    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &w->cancelled;
    w->refs++;
    if (grpc_call_start_batch(w->call, &op, 1, &w->close_tag, NULL) != GRPC_CALL_OK) {
        w->refs--;
        w->closed = true;
    }
    if (!w->health && !w->closed)
        watcher_send(w, watch_message(srv, w, true));
    else
        watcher_pump(w);
    watcher_maybe_free(w);
}

/* ---- arrivals --------------------------------------------------------- */

static void slot_arm(struct server *srv, struct slot *s)
{
    grpc_metadata_array_init(&s->md);
    s->payload = NULL;
    grpc_call_error e =
        grpc_server_request_registered_call(srv->server, s->handle, &s->call, &s->deadline,
                                            &s->md, &s->payload, srv->cq, srv->cq, &s->tag);
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

    struct rpc *r = rpc_new(call, s->m);
    if (payload) {
        r->req = decode(s->m->input, payload);
        grpc_byte_buffer_destroy(payload);
    }
    if (!r->req) {
        char msg[200];
        snprintf(msg, sizeof(msg), "cannot decode the request of %s as %s", s->m->path,
                 s->m->input->name);
        rpc_fail(r, GRPC_STATUS_INVALID_ARGUMENT, msg);
        rpc_send(r);
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
        rpc_send(r);
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

/* Commits what the drained calls changed, then answers them all: writes with
 * their replies (or UNAVAILABLE if the commit failed), reads run now against
 * durable state, streams start, and watchers get the new events. */
static void finish_batch(struct server *srv)
{
    if (!srv->stopping)
        st_expire(srv->state, now_real().tv_sec);
    char err[512] = "";
    bool failed = st_commit(srv->state, err, sizeof(err)) != 0;
    if (failed)
        log_error("store commit failed, %s: the batch is refused", err);
    for (struct rpc *r = srv->writes, *next; r; r = next) {
        next = r->next;
        if (failed) {
            char msg[600];
            snprintf(msg, sizeof(msg), "store unavailable: %s", err);
            rpc_fail(r, GRPC_STATUS_UNAVAILABLE, msg);
        }
        rpc_send(r);
    }
    srv->writes = NULL;
    srv->writes_tail = &srv->writes;
    for (struct rpc *r = srv->reads, *next; r; r = next) {
        next = r->next;
        if (r->m->kind == API_READ) {
            rpc_run(srv, r);
            rpc_send(r);
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
    }
}

void server_request_stop(struct server *srv)
{
    if (atomic_exchange(&srv->stop, 1))
        return;
    /* Fails every pending request slot at once, which wakes the loop. */
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
}

struct server *server_create(struct state *st, const char *const *listen, size_t nlisten,
                             char *err, size_t errlen)
{
    /* Every method of the service descriptors must have a handler entry. */
    const ProtobufCServiceDescriptor *svcs[] = {&ipam__v1__ipam__descriptor,
                                                &grpc__health__v1__health__descriptor};
    for (size_t k = 0; k < 2; k++)
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
    atomic_init(&srv->stop, 0);

    grpc_arg args[1];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
    args[0].value.integer = 0; /* A second ipamd on the same port must fail. */
    grpc_channel_args cargs = {1, args};
    srv->server = grpc_server_create(&cargs, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);

    srv->nslots = api_nmethods * SLOTS_PER_METHOD;
    srv->slots = calloc(srv->nslots, sizeof(*srv->slots));
    for (size_t i = 0; i < api_nmethods; i++) {
        void *h = grpc_server_register_method(srv->server, api_methods[i].path, NULL,
                                              GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        for (size_t k = 0; k < SLOTS_PER_METHOD; k++) {
            struct slot *s = &srv->slots[i * SLOTS_PER_METHOD + k];
            s->tag.fn = on_call;
            s->m = &api_methods[i];
            s->handle = h;
        }
    }
    for (size_t i = 0; i < nlisten; i++) {
        grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
        int port = grpc_server_add_http2_port(srv->server, listen[i], creds);
        grpc_server_credentials_release(creds);
        if (port == 0) {
            snprintf(err, errlen, "cannot listen on `%s' (in use, or not host:port / unix:/path)",
                     listen[i]);
            grpc_server_destroy(srv->server);
            grpc_completion_queue_shutdown(srv->cq);
            while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                       .type != GRPC_QUEUE_SHUTDOWN)
                ;
            grpc_completion_queue_destroy(srv->cq);
            free(srv->slots);
            free(srv);
            return NULL;
        }
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
    grpc_server_destroy(srv->server);
    grpc_completion_queue_shutdown(srv->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE)
            dispatch(srv, ev);
    }
    grpc_completion_queue_destroy(srv->cq);
    free(srv->slots);
    arena_free(&srv->ctx.arena);
    free(srv);
}
