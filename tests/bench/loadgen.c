/* loadgen: keeps N calls in flight against ipamd and reports rate and latency.
 *
 *   loadgen --target unix:/path --mode MODE [--inflight N] [--seconds S]
 *           [--channels C] [--pool P] [--owners K] [--prefix X]
 *
 * Modes: health (grpc.health.v1.Health/Check, the transport ceiling),
 * mixed (Allocate a new owner, then Release it, alternating per slot),
 * idem (Allocate for owners that already hold a lease: K owners, made first),
 * fill (Allocate K new owners once, as fast as possible, then stop),
 * list (page through every lease with ListLeases, one page in flight; rate is
 * leases per second).
 * Prints one JSON object: mode, calls, seconds, rate, p50_us, p99_us, errors. */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "ipam/v1/ipam.pb-c.h"

#define MAX_LAT 4000000

enum mode { HEALTH, MIXED, IDEM, FILL, LIST };

struct slot {
    int index;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array md_initial, md_trailing;
    grpc_status_code status;
    grpc_slice details;
    int64_t started;
    uint64_t seq;      /* which owner this slot works on */
    bool releasing;    /* mixed: the next call is the Release */
};

static struct {
    enum mode mode;
    const char *target, *pool, *prefix;
    int inflight, channels;
    double seconds;
    uint64_t owners;
    grpc_channel **ch;
    void **m_health, **m_alloc, **m_release, **m_list;
    char token[512];
    uint64_t leases;
    bool list_done;
    grpc_completion_queue *cq;
    uint64_t next_owner, calls, errors;
    uint32_t *lat;
    size_t nlat;
} g;

/* --watch: one Watch stream on its own channel during the load, checking that
 * it receives every event, in order, with no revision skipped. */
static struct {
    bool on;
    grpc_channel *ch;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array md_initial, md_trailing;
    grpc_status_code status;
    grpc_slice details;
    char tag_start, tag_msg, tag_status; /* their addresses are the tags */
    bool created, ended, status_done, msg_pending;
    uint64_t last_rev, events, gaps;
} w;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    uint8_t buf[512];
    size_t len = protobuf_c_message_pack(m, buf);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static void start(struct slot *s)
{
    int c = s->index % g.channels;
    void *method;
    char owner[96];
    if (g.mode == LIST) {
        Ipam__V1__ListLeasesRequest r = IPAM__V1__LIST_LEASES_REQUEST__INIT;
        r.page_size = 10000;
        r.page_token = g.token;
        s->send = pack(&r.base);
        method = g.m_list[c];
    } else if (g.mode == HEALTH) {
        Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        s->send = pack(&r.base);
        method = g.m_health[c];
    } else {
        if (!s->releasing) {
            if (g.mode == IDEM)
                s->seq = g.next_owner++ % g.owners;
            else
                s->seq = g.next_owner++;
        }
        snprintf(owner, sizeof(owner), "%s%llu", g.prefix, (unsigned long long)s->seq);
        if (s->releasing) {
            Ipam__V1__ReleaseRequest r = IPAM__V1__RELEASE_REQUEST__INIT;
            r.owner = owner;
            s->send = pack(&r.base);
            method = g.m_release[c];
        } else {
            Ipam__V1__AllocateRequest r = IPAM__V1__ALLOCATE_REQUEST__INIT;
            r.pool = (char *)g.pool;
            r.owner = owner;
            s->send = pack(&r.base);
            method = g.m_alloc[c];
        }
    }
    s->call = grpc_channel_create_registered_call(g.ch[c], NULL, GRPC_PROPAGATE_DEFAULTS, g.cq,
                                                  method, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                  NULL);
    grpc_metadata_array_init(&s->md_initial);
    grpc_metadata_array_init(&s->md_trailing);
    s->recv = NULL;
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->md_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->md_trailing;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    s->started = now_us();
    if (grpc_call_start_batch(s->call, ops, 6, s, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "loadgen: cannot start a call\n");
        exit(1);
    }
}

static void finish(struct slot *s)
{
    int64_t lat = now_us() - s->started;
    if (g.nlat < MAX_LAT)
        g.lat[g.nlat++] = (uint32_t)(lat > UINT32_MAX ? UINT32_MAX : lat);
    g.calls++;
    if (s->status != GRPC_STATUS_OK) {
        if (g.errors++ < 5) {
            char *d = grpc_slice_to_c_string(s->details);
            fprintf(stderr, "loadgen: call failed: %d %s\n", s->status, d);
            gpr_free(d);
        }
    }
    if (g.mode == LIST && s->recv && s->status == GRPC_STATUS_OK) {
        grpc_byte_buffer_reader r;
        grpc_byte_buffer_reader_init(&r, s->recv);
        grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
        Ipam__V1__ListLeasesResponse *m = ipam__v1__list_leases_response__unpack(
            NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
        grpc_slice_unref(sl);
        grpc_byte_buffer_reader_destroy(&r);
        if (m) {
            g.leases += m->n_leases;
            snprintf(g.token, sizeof(g.token), "%s", m->next_page_token);
            g.list_done = !m->next_page_token[0];
            ipam__v1__list_leases_response__free_unpacked(m, NULL);
        } else {
            g.errors++;
            g.list_done = true;
        }
    } else if (g.mode == LIST) {
        g.list_done = true;
    }
    grpc_slice_unref(s->details);
    grpc_byte_buffer_destroy(s->send);
    if (s->recv)
        grpc_byte_buffer_destroy(s->recv);
    grpc_metadata_array_destroy(&s->md_initial);
    grpc_metadata_array_destroy(&s->md_trailing);
    grpc_call_unref(s->call);
    if (g.mode == MIXED)
        s->releasing = !s->releasing;
}

static void watch_recv(void)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &w.recv;
    if (grpc_call_start_batch(w.call, &op, 1, &w.tag_msg, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "loadgen: cannot read the watch\n");
        exit(1);
    }
    w.msg_pending = true;
}

static void watch_start(void)
{
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    grpc_arg arg = {GRPC_ARG_INTEGER, (char *)"grpc.channel_id", {.integer = -1}};
    grpc_channel_args args = {1, &arg};
    w.ch = grpc_channel_create(g.target, cr, &args);
    grpc_channel_credentials_release(cr);
    grpc_slice method = grpc_slice_from_static_string("/ipam.v1.Ipam/Watch");
    w.call = grpc_channel_create_call(w.ch, NULL, GRPC_PROPAGATE_DEFAULTS, g.cq, method, NULL,
                                      gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    Ipam__V1__WatchRequest r = IPAM__V1__WATCH_REQUEST__INIT;
    w.send = pack(&r.base);
    grpc_metadata_array_init(&w.md_initial);
    grpc_metadata_array_init(&w.md_trailing);
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = w.send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &w.md_initial;
    grpc_op st;
    memset(&st, 0, sizeof(st));
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &w.md_trailing;
    st.data.recv_status_on_client.status = &w.status;
    st.data.recv_status_on_client.status_details = &w.details;
    if (grpc_call_start_batch(w.call, ops, 4, &w.tag_start, NULL) != GRPC_CALL_OK ||
        grpc_call_start_batch(w.call, &st, 1, &w.tag_status, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "loadgen: cannot start the watch\n");
        exit(1);
    }
    watch_recv();
}

/* Handles a completion of the watch; false if the tag is not the watch's. */
static bool watch_event(void *tag)
{
    if (tag == &w.tag_start)
        return true;
    if (tag == &w.tag_status) {
        w.ended = w.status_done = true;
        return true;
    }
    if (tag != &w.tag_msg)
        return false;
    w.msg_pending = false;
    if (!w.recv) {
        w.ended = true;
        return true;
    }
    grpc_byte_buffer_reader r;
    grpc_byte_buffer_reader_init(&r, w.recv);
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    Ipam__V1__WatchResponse *m =
        ipam__v1__watch_response__unpack(NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    grpc_byte_buffer_reader_destroy(&r);
    grpc_byte_buffer_destroy(w.recv);
    w.recv = NULL;
    if (!m) {
        fprintf(stderr, "loadgen: undecodable watch message\n");
        exit(1);
    }
    if (m->created) {
        w.created = true;
        w.last_rev = m->revision;
    }
    for (size_t i = 0; i < m->n_events; i++) {
        if (m->events[i]->revision != w.last_rev + 1)
            w.gaps++;
        w.last_rev = m->events[i]->revision;
        w.events++;
    }
    ipam__v1__watch_response__free_unpacked(m, NULL);
    watch_recv();
    return true;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen --target T --mode health|mixed|idem|fill [--inflight N] "
                    "[--seconds S] [--channels C] [--pool P] [--owners K] [--prefix X]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    g.inflight = 64;
    g.channels = 1;
    g.seconds = 3;
    g.pool = "bench";
    g.prefix = "bench/";
    g.owners = 1000;
    const char *mode = NULL;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--target"))
            g.target = v;
        else if (!strcmp(a, "--mode"))
            mode = v;
        else if (!strcmp(a, "--inflight"))
            g.inflight = (int)strtol(v, NULL, 10);
        else if (!strcmp(a, "--channels"))
            g.channels = (int)strtol(v, NULL, 10);
        else if (!strcmp(a, "--seconds"))
            g.seconds = strtod(v, NULL);
        else if (!strcmp(a, "--pool"))
            g.pool = v;
        else if (!strcmp(a, "--owners"))
            g.owners = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--prefix"))
            g.prefix = v;
        else if (!strcmp(a, "--watch"))
            w.on = !strcmp(v, "1");
        else
            usage();
    }
    if (!g.target || !mode || g.inflight < 1 || g.channels < 1 || g.owners < 1)
        usage();
    if (!strcmp(mode, "health"))
        g.mode = HEALTH;
    else if (!strcmp(mode, "mixed"))
        g.mode = MIXED;
    else if (!strcmp(mode, "idem"))
        g.mode = IDEM;
    else if (!strcmp(mode, "fill"))
        g.mode = FILL;
    else if (!strcmp(mode, "list"))
        g.mode = LIST;
    else
        usage();

    grpc_init();
    g.cq = grpc_completion_queue_create_for_next(NULL);
    g.ch = calloc((size_t)g.channels, sizeof(*g.ch));
    g.m_health = calloc((size_t)g.channels, sizeof(void *));
    g.m_alloc = calloc((size_t)g.channels, sizeof(void *));
    g.m_release = calloc((size_t)g.channels, sizeof(void *));
    g.m_list = calloc((size_t)g.channels, sizeof(void *));
    g.lat = malloc(MAX_LAT * sizeof(uint32_t));
    for (int c = 0; c < g.channels; c++) {
        grpc_channel_credentials *cr = grpc_insecure_credentials_create();
        /* Separate channels must not share one connection. */
        grpc_arg arg = {GRPC_ARG_INTEGER, (char *)"grpc.channel_id", {.integer = c}};
        grpc_channel_args args = {1, &arg};
        g.ch[c] = grpc_channel_create(g.target, cr, &args);
        grpc_channel_credentials_release(cr);
        g.m_health[c] = grpc_channel_register_call(g.ch[c], "/grpc.health.v1.Health/Check", NULL, NULL);
        g.m_alloc[c] = grpc_channel_register_call(g.ch[c], "/ipam.v1.Ipam/Allocate", NULL, NULL);
        g.m_release[c] = grpc_channel_register_call(g.ch[c], "/ipam.v1.Ipam/Release", NULL, NULL);
        g.m_list[c] = grpc_channel_register_call(g.ch[c], "/ipam.v1.Ipam/ListLeases", NULL, NULL);
    }
    if (w.on) {
        watch_start();
        while (!w.created && !w.ended) {
            grpc_event ev = grpc_completion_queue_next(
                g.cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(30, GPR_TIMESPAN)), NULL);
            if (ev.type != GRPC_OP_COMPLETE || !watch_event(ev.tag)) {
                fprintf(stderr, "loadgen: the watch did not start\n");
                exit(1);
            }
        }
    }
    struct slot *slots = calloc((size_t)g.inflight, sizeof(*slots));
    int64_t t0 = now_us(), end = t0 + (int64_t)(g.seconds * 1e6);
    int active = 0;
    uint64_t limit = g.mode == FILL ? g.owners : UINT64_MAX;
    if (g.mode == LIST)
        g.inflight = 1; /* Each page needs the previous page's token. */
    for (int i = 0; i < g.inflight && g.next_owner < limit; i++) {
        slots[i].index = i;
        start(&slots[i]);
        active++;
    }
    while (active) {
        grpc_event ev = grpc_completion_queue_next(g.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        if (w.on && watch_event(ev.tag))
            continue;
        struct slot *s = ev.tag;
        finish(s);
        bool more = g.mode == FILL   ? g.next_owner < limit
                    : g.mode == LIST ? !g.list_done
                                     : now_us() < end || s->releasing;
        if (more)
            start(s);
        else
            active--;
    }
    double secs = (double)(now_us() - t0) / 1e6;
    /* Every successful mixed call is one event: wait (10 s at most) until the
     * watch has them all, then end it. */
    uint64_t expected = g.calls - g.errors;
    int64_t load_end = now_us(), caught_up = -1;
    while (w.on && !w.ended && w.events < expected && now_us() < load_end + 10000000) {
        grpc_event ev = grpc_completion_queue_next(
            g.cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN)), NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            watch_event(ev.tag);
    }
    if (w.on && w.events >= expected)
        caught_up = now_us() - load_end;
    if (w.on) {
        grpc_call_cancel(w.call, NULL);
        while (w.msg_pending || !w.status_done) {
            grpc_event ev = grpc_completion_queue_next(g.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type != GRPC_OP_COMPLETE)
                break;
            if (ev.tag == &w.tag_msg && w.recv == NULL) {
                w.msg_pending = false;
                continue;
            }
            if (ev.tag == &w.tag_msg) {
                grpc_byte_buffer_destroy(w.recv); /* arrived after the cancel */
                w.recv = NULL;
                w.msg_pending = false;
                continue;
            }
            watch_event(ev.tag);
        }
    }
    qsort(g.lat, g.nlat, sizeof(uint32_t), cmp_u32);
    uint32_t p50 = g.nlat ? g.lat[g.nlat / 2] : 0;
    uint32_t p99 = g.nlat ? g.lat[(size_t)((double)g.nlat * 0.99)] : 0;
    double rate = (double)(g.mode == LIST ? g.leases : g.calls) / secs;
    printf("{\"mode\":\"%s\",\"inflight\":%d,\"calls\":%llu,\"leases\":%llu,\"seconds\":%.3f,"
           "\"rate\":%.1f,\"p50_us\":%u,\"p99_us\":%u,\"errors\":%llu",
           mode, g.inflight, (unsigned long long)g.calls, (unsigned long long)g.leases, secs, rate,
           p50, p99, (unsigned long long)g.errors);
    if (w.on)
        printf(",\"watch_events\":%llu,\"watch_expected\":%llu,\"watch_gaps\":%llu,"
               "\"watch_catchup_ms\":%.1f",
               (unsigned long long)w.events, (unsigned long long)expected,
               (unsigned long long)w.gaps, caught_up < 0 ? -1.0 : (double)caught_up / 1000);
    printf("}\n");
    for (int c = 0; c < g.channels; c++)
        grpc_channel_destroy(g.ch[c]);
    if (w.on) {
        grpc_call_unref(w.call);
        grpc_byte_buffer_destroy(w.send);
        grpc_slice_unref(w.details);
        grpc_metadata_array_destroy(&w.md_initial);
        grpc_metadata_array_destroy(&w.md_trailing);
        grpc_channel_destroy(w.ch);
    }
    grpc_completion_queue_shutdown(g.cq);
    while (grpc_completion_queue_next(g.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(g.cq);
    free(slots);
    free(g.ch);
    free(g.m_health);
    free(g.m_alloc);
    free(g.m_release);
    free(g.m_list);
    free(g.lat);
    grpc_shutdown();
    return g.errors ? 1 : 0;
}
