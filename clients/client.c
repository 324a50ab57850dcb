/* libipamclient: blocking unary and server-streaming gRPC calls over the C core. */
#include "ipam/client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#define IPAM_SERVICE "ipam.v1.Ipam"
#define HEALTH_SERVICE "grpc.health.v1.Health"
/* ipamd accepts a ping every 5 s; a frozen peer is given up after 30 s. */
#define KEEPALIVE_TIME_MS 20000
#define KEEPALIVE_TIMEOUT_MS 10000

/* One entry per method: its name, path and message types all come from the
 * same tokens, so a typo in a descriptor name fails to compile. */
#define METHOD(id, svc, Name, prefix, streaming)                                                   \
    [IPAM_METHOD_##id] = {#Name, "/" svc "/" #Name, &prefix##_request__descriptor,                 \
                          &prefix##_response__descriptor, streaming}

const ipam_method ipam_methods[IPAM_METHOD_COUNT] = {
    METHOD(APPLY_POOL, IPAM_SERVICE, ApplyPool, ipam__v1__apply_pool, false),
    METHOD(GET_POOL, IPAM_SERVICE, GetPool, ipam__v1__get_pool, false),
    METHOD(LIST_POOLS, IPAM_SERVICE, ListPools, ipam__v1__list_pools, false),
    METHOD(DELETE_POOL, IPAM_SERVICE, DeletePool, ipam__v1__delete_pool, false),
    METHOD(ALLOCATE, IPAM_SERVICE, Allocate, ipam__v1__allocate, false),
    METHOD(RELEASE, IPAM_SERVICE, Release, ipam__v1__release, false),
    METHOD(RENEW, IPAM_SERVICE, Renew, ipam__v1__renew, false),
    METHOD(GET_LEASE, IPAM_SERVICE, GetLease, ipam__v1__get_lease, false),
    METHOD(LIST_LEASES, IPAM_SERVICE, ListLeases, ipam__v1__list_leases, false),
    METHOD(WATCH, IPAM_SERVICE, Watch, ipam__v1__watch, true),
    METHOD(HEALTH_CHECK, HEALTH_SERVICE, Check, grpc__health__v1__health_check, false),
    METHOD(HEALTH_WATCH, HEALTH_SERVICE, Watch, grpc__health__v1__health_check, true),
};

#define STATUS_NAMES(X)                                                                            \
    X(OK)                                                                                          \
    X(CANCELLED)                                                                                   \
    X(UNKNOWN)                                                                                     \
    X(INVALID_ARGUMENT)                                                                            \
    X(DEADLINE_EXCEEDED)                                                                           \
    X(NOT_FOUND)                                                                                   \
    X(ALREADY_EXISTS)                                                                              \
    X(PERMISSION_DENIED)                                                                           \
    X(RESOURCE_EXHAUSTED)                                                                          \
    X(FAILED_PRECONDITION)                                                                         \
    X(ABORTED)                                                                                     \
    X(OUT_OF_RANGE)                                                                                \
    X(UNIMPLEMENTED)                                                                               \
    X(INTERNAL)                                                                                    \
    X(UNAVAILABLE)                                                                                 \
    X(DATA_LOSS)                                                                                   \
    X(UNAUTHENTICATED)

const char *ipam_status_name(int code)
{
    switch (code) {
#define X(name)                                                                                    \
    case GRPC_STATUS_##name:                                                                       \
        return #name;
        STATUS_NAMES(X)
#undef X
    default:
        return "UNKNOWN_CODE";
    }
}

struct ipam_client {
    grpc_channel *channel;
    uint32_t timeout_ms;
};

/* Completion-queue tags; each call or stream has a queue of its own, so small
 * constants are unique enough. */
#define TAG_UNARY ((void *)1)
#define TAG_START ((void *)2)
#define TAG_MESSAGE ((void *)3)
#define TAG_STATUS ((void *)4)

struct ipam_stream {
    grpc_completion_queue *cq;
    grpc_call *call; /* NULL when the stream failed before reaching gRPC */
    const ProtobufCMessageDescriptor *response_desc;
    grpc_byte_buffer *request; /* kept until the TAG_START batch completes */
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    bool start_pending, status_pending;
    bool done; /* final_status and final_msg are set */
    int final_status;
    char *final_msg;
};

/* malloc'd printf; NULL when memory runs out. */
__attribute__((format(printf, 1, 2))) static char *msg_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void set_msg(char **errmsg, char *msg)
{
    if (errmsg != NULL)
        *errmsg = msg;
    else
        free(msg);
}

/* The message of a received status: the server's text, else the code's name. */
static char *status_message(grpc_status_code code, grpc_slice details)
{
    size_t len = GRPC_SLICE_LENGTH(details);
    if (len == 0)
        return msg_printf("%s", ipam_status_name(code));
    return msg_printf("%.*s", (int)len, (const char *)GRPC_SLICE_START_PTR(details));
}

static gpr_timespec deadline_after(uint32_t timeout_ms)
{
    if (timeout_ms == 0)
        return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis((int64_t)timeout_ms, GPR_TIMESPAN));
}

/* Packs m straight into a gRPC slice. The byte buffer takes its own reference
 * to the slice, so ours is dropped here. */
static grpc_byte_buffer *pack_message(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    grpc_slice slice = grpc_slice_malloc(len);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

/* Unpacks a received buffer (which stays the caller's); NULL when it is not a
 * valid message of desc. */
static ProtobufCMessage *unpack_message(const ProtobufCMessageDescriptor *desc,
                                        grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(slice),
                                                    GRPC_SLICE_START_PTR(slice));
    grpc_slice_unref(slice);
    return m;
}

/* Waits for tag on cq, which must have been queued by a started batch. */
static bool pluck(grpc_completion_queue *cq, void *tag)
{
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static void destroy_queue(grpc_completion_queue *cq)
{
    if (cq == NULL)
        return;
    /* Every tag has been plucked, so shutdown completes at once. */
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
}

/* What a channel's TLS needs, read from the files of an ipam_tls. */
struct tls_pem {
    char *ca, *cert, *key; /* PEM text, NULL when not given */
    char *server_name;
};

/* The credentials of ipam_client_open(); NULL for insecure channels. */

#define MAX_PEM_BYTES (1024 * 1024)

static void tls_pem_free(struct tls_pem *t)
{
    if (t == NULL)
        return;
    free(t->ca);
    free(t->cert);
    if (t->key != NULL) {
        /* Do not leave the private key lying in freed memory. */
        explicit_bzero(t->key, strlen(t->key));
        free(t->key);
    }
    free(t->server_name);
    free(t);
}

/* Reads a whole PEM file as a string (the caller's); NULL with *msg set. */
static char *read_pem(const char *what, const char *path, char **msg)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        *msg = msg_printf("cannot read the TLS %s `%s': %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_PEM_BYTES + 1);
    size_t n = buf != NULL ? fread(buf, 1, MAX_PEM_BYTES + 1, f) : 0;
    const char *why = NULL;
    if (buf == NULL)
        why = "out of memory";
    else if (ferror(f))
        why = strerror(errno);
    else if (n > MAX_PEM_BYTES)
        why = "larger than 1 MiB";
    if (why == NULL) {
        buf[n] = '\0';
        if (strstr(buf, "-----BEGIN ") == NULL)
            why = "not PEM (no -----BEGIN line)";
    }
    fclose(f);
    if (why != NULL) {
        *msg = msg_printf("cannot read the TLS %s `%s': %s", what, path, why);
        if (buf != NULL)
            explicit_bzero(buf, n);
        free(buf);
        return NULL;
    }
    return buf;
}

/* Reads the files of tls; NULL with *msg set when one fails. */
static struct tls_pem *tls_pem_load(const ipam_tls *tls, char **msg)
{
    if ((tls->cert_file == NULL) != (tls->key_file == NULL)) {
        *msg = msg_printf("a TLS client certificate and its key go together (got only the %s)",
                          tls->cert_file != NULL ? "certificate" : "key");
        return NULL;
    }
    struct tls_pem *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        *msg = msg_printf("out of memory");
        return NULL;
    }
    bool ok = true;
    if (tls->ca_file != NULL) {
        t->ca = read_pem("CA file", tls->ca_file, msg);
        ok = t->ca != NULL;
    }
    if (ok && tls->cert_file != NULL) {
        t->cert = read_pem("certificate", tls->cert_file, msg);
        if (t->cert != NULL)
            t->key = read_pem("key", tls->key_file, msg);
        ok = t->key != NULL;
    }
    if (ok && tls->server_name != NULL && tls->server_name[0] != '\0') {
        t->server_name = strdup(tls->server_name);
        if (t->server_name == NULL) {
            *msg = msg_printf("out of memory");
            ok = false;
        }
    }
    if (!ok) {
        tls_pem_free(t);
        return NULL;
    }
    return t;
}

/* A client whose channel uses t's TLS, or is insecure when t is NULL. */
static ipam_client *client_new(const char *target, const struct tls_pem *t)
{
    ipam_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    grpc_init();
    grpc_channel_credentials *creds;
    /* Reconnect quickly: ipamd restarting (or starting after its clients, as
     * in a Pod) should not leave clients waiting out gRPC's default backoff,
     * which grows to two minutes. And ping while calls are open, also on a
     * quiet Watch: a peer that vanished without closing the connection (its
     * host gone, the process frozen) is noticed within KEEPALIVE_TIME_MS +
     * KEEPALIVE_TIMEOUT_MS instead of when TCP gives up. */
    static const struct {
        const char *key;
        int value;
    } ints[] = {
        {GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100},
        {GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100},
        {GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000},
        {GRPC_ARG_KEEPALIVE_TIME_MS, KEEPALIVE_TIME_MS},
        {GRPC_ARG_KEEPALIVE_TIMEOUT_MS, KEEPALIVE_TIMEOUT_MS},
        {GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0},
        {GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, KEEPALIVE_TIME_MS},
    };
    enum { NINTS = sizeof(ints) / sizeof(ints[0]) };
    grpc_arg arg[NINTS + 1];
    memset(arg, 0, sizeof(arg));
    for (int i = 0; i < NINTS; i++) {
        arg[i].type = GRPC_ARG_INTEGER;
        arg[i].key = (char *)ints[i].key;
        arg[i].value.integer = ints[i].value;
    }
    grpc_channel_args args = {NINTS, arg};
    if (t != NULL) {
        /* The credentials copy the PEM text. */
        grpc_ssl_pem_key_cert_pair pair = {t->key, t->cert};
        creds = grpc_ssl_credentials_create_ex(t->ca, t->cert != NULL ? &pair : NULL, NULL, NULL);
        if (t->server_name != NULL) {
            arg[NINTS].type = GRPC_ARG_STRING;
            arg[NINTS].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
            arg[NINTS].value.string = t->server_name;
            args.num_args = NINTS + 1;
        }
    } else {
        creds = grpc_insecure_credentials_create();
    }
    c->channel = grpc_channel_create(target, creds, &args);
    grpc_channel_credentials_release(creds);
    c->timeout_ms = IPAM_CLIENT_DEFAULT_TIMEOUT_MS;
    return c;
}

ipam_client *ipam_client_open(const char *target)
{
    if (target == NULL)
        return NULL;
    return client_new(target, NULL);
}

ipam_client *ipam_client_open_tls(const char *target, const ipam_tls *tls, char **errmsg)
{
    char *msg = NULL;
    ipam_client *c = NULL;
    struct tls_pem *t = NULL;
    if (errmsg != NULL)
        *errmsg = NULL;
    if (target == NULL) {
        set_msg(errmsg, msg_printf("ipam_client_open_tls: missing target"));
        return NULL;
    }
    if (tls != NULL) {
        t = tls_pem_load(tls, &msg);
        if (t == NULL) {
            set_msg(errmsg, msg);
            return NULL;
        }
    }
    c = client_new(target, t);
    if (c == NULL)
        set_msg(errmsg, msg_printf("out of memory"));
    tls_pem_free(t);
    return c;
}

void ipam_client_close(ipam_client *c)
{
    if (c == NULL)
        return;
    grpc_channel_destroy(c->channel);
    free(c);
    grpc_shutdown();
}

void ipam_client_set_timeout(ipam_client *c, uint32_t timeout_ms)
{
    c->timeout_ms = timeout_ms;
}

static grpc_call *create_call(ipam_client *c, grpc_completion_queue *cq, const char *path,
                              gpr_timespec deadline)
{
    /* The call takes its own reference to the method slice. */
    grpc_slice method = grpc_slice_from_copied_string(path);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               method, NULL, deadline, NULL);
    grpc_slice_unref(method);
    return call;
}

int ipam_client_call(ipam_client *c, const char *path, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *response_desc, ProtobufCMessage **resp,
                     char **errmsg)
{
    int rc;
    char *msg = NULL;
    grpc_completion_queue *cq = NULL;
    grpc_call *call = NULL;
    grpc_byte_buffer *send = NULL, *recv = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;

    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    if (resp != NULL)
        *resp = NULL;
    if (c == NULL || path == NULL || req == NULL || response_desc == NULL || resp == NULL) {
        rc = GRPC_STATUS_INVALID_ARGUMENT;
        msg = msg_printf("ipam_client_call: missing argument");
        goto out;
    }

    send = pack_message(req);
    cq = grpc_completion_queue_create_for_pluck(NULL);
    call = create_call(c, cq, path, deadline_after(c->timeout_ms));

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;
    grpc_call_error err = grpc_call_start_batch(call, ops, 6, TAG_UNARY, NULL);
    if (err != GRPC_CALL_OK) {
        rc = GRPC_STATUS_INTERNAL;
        msg = msg_printf("%s: cannot start call (grpc_call_error %d)", path, (int)err);
        goto out;
    }
    /* The batch holds RECV_STATUS, so it completes even when the call fails;
     * its outcome is in status, not in the event's success flag. */
    pluck(cq, TAG_UNARY);

    if (status != GRPC_STATUS_OK) {
        rc = status;
        msg = status_message(status, details);
        goto out;
    }
    if (recv == NULL) {
        rc = GRPC_STATUS_INTERNAL;
        msg = msg_printf("%s: the server answered OK without a response", path);
        goto out;
    }
    *resp = unpack_message(response_desc, recv);
    if (*resp == NULL) {
        rc = GRPC_STATUS_INTERNAL;
        msg = msg_printf("%s: cannot parse the response as %s", path, response_desc->name);
        goto out;
    }
    rc = GRPC_STATUS_OK;

out:
    if (call != NULL)
        grpc_call_unref(call);
    destroy_queue(cq);
    if (send != NULL)
        grpc_byte_buffer_destroy(send);
    if (recv != NULL)
        grpc_byte_buffer_destroy(recv);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    set_msg(errmsg, msg);
    return rc;
}

/* Checks that m exists, has the wanted arity and that req is its request. */
static int check_method(ipam_method_id m, const ProtobufCMessage *req, bool streaming, char **msg)
{
    if ((unsigned)m >= IPAM_METHOD_COUNT) {
        *msg = msg_printf("unknown method %d", (int)m);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    const ipam_method *me = &ipam_methods[m];
    if (me->server_streaming != streaming) {
        *msg = msg_printf("%s is %s", me->path, me->server_streaming ? "streaming" : "unary");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (req == NULL || req->descriptor != me->request) {
        *msg = msg_printf("%s takes %s, not %s", me->path, me->request->name,
                          req == NULL ? "nothing" : req->descriptor->name);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    return GRPC_STATUS_OK;
}

int ipam_client_invoke(ipam_client *c, ipam_method_id m, const ProtobufCMessage *req,
                       ProtobufCMessage **resp, char **errmsg)
{
    char *msg = NULL;
    int rc = check_method(m, req, false, &msg);
    if (rc != GRPC_STATUS_OK) {
        if (resp != NULL)
            *resp = NULL;
        set_msg(errmsg, msg);
        return rc;
    }
    return ipam_client_call(c, ipam_methods[m].path, req, ipam_methods[m].response, resp, errmsg);
}

int ipam_client_health(ipam_client *c, const char *service, int *serving, char **errmsg)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    /* protobuf-c fields are not const; the request is only read. */
    req.service = (char *)(service != NULL ? service : "");
    int rc = ipam_client_invoke(c, IPAM_METHOD_HEALTH_CHECK, &req.base, &resp, errmsg);
    if (rc == GRPC_STATUS_OK) {
        *serving = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rc;
}

/* Ends s with a local failure, reported by the next ipam_stream_next(). */
static void stream_fail(ipam_stream *s, int code, char *msg)
{
    s->done = true;
    s->final_status = code;
    s->final_msg = msg;
}

static ipam_stream *stream_new(const ProtobufCMessageDescriptor *response_desc)
{
    ipam_stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->response_desc = response_desc;
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->status = GRPC_STATUS_UNKNOWN;
    s->details = grpc_empty_slice();
    return s;
}

ipam_stream *ipam_client_stream_open(ipam_client *c, const char *path, const ProtobufCMessage *req,
                                     const ProtobufCMessageDescriptor *response_desc)
{
    ipam_stream *s = stream_new(response_desc);
    if (s == NULL)
        return NULL;
    if (c == NULL || path == NULL || req == NULL || response_desc == NULL) {
        stream_fail(s, GRPC_STATUS_INVALID_ARGUMENT,
                    msg_printf("ipam_client_stream_open: missing argument"));
        return s;
    }

    s->request = pack_message(req);
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    /* Streams such as Watch are meant to last: no deadline. */
    s->call = create_call(c, s->cq, path, gpr_inf_future(GPR_CLOCK_REALTIME));

    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    grpc_call_error err = grpc_call_start_batch(s->call, ops, 4, TAG_START, NULL);
    if (err != GRPC_CALL_OK) {
        stream_fail(s, GRPC_STATUS_INTERNAL,
                    msg_printf("%s: cannot start call (grpc_call_error %d)", path, (int)err));
        return s;
    }
    s->start_pending = true;

    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    ops[0].data.recv_status_on_client.status = &s->status;
    ops[0].data.recv_status_on_client.status_details = &s->details;
    ops[0].data.recv_status_on_client.error_string = &s->error_string;
    err = grpc_call_start_batch(s->call, ops, 1, TAG_STATUS, NULL);
    if (err != GRPC_CALL_OK) {
        grpc_call_cancel(s->call, NULL);
        stream_fail(s, GRPC_STATUS_INTERNAL,
                    msg_printf("%s: cannot start call (grpc_call_error %d)", path, (int)err));
        return s;
    }
    s->status_pending = true;
    return s;
}

ipam_stream *ipam_client_stream_invoke(ipam_client *c, ipam_method_id m,
                                       const ProtobufCMessage *req)
{
    char *msg = NULL;
    int rc = check_method(m, req, true, &msg);
    if (rc != GRPC_STATUS_OK) {
        ipam_stream *s = stream_new(NULL);
        if (s != NULL)
            stream_fail(s, rc, msg);
        else
            free(msg);
        return s;
    }
    return ipam_client_stream_open(c, ipam_methods[m].path, req, ipam_methods[m].response);
}

/* Collects the completions still queued for the stream's first batch. */
static void finish_start(ipam_stream *s)
{
    if (!s->start_pending)
        return;
    pluck(s->cq, TAG_START);
    s->start_pending = false;
    grpc_byte_buffer_destroy(s->request);
    s->request = NULL;
}

/* Waits for the final status and keeps it as the stream's result. */
static void finish_status(ipam_stream *s)
{
    if (!s->status_pending)
        return;
    pluck(s->cq, TAG_STATUS);
    s->status_pending = false;
    if (!s->done)
        stream_fail(s, s->status,
                    s->status == GRPC_STATUS_OK ? NULL : status_message(s->status, s->details));
}

static ProtobufCMessage *stream_end(ipam_stream *s, int *status, char **errmsg)
{
    *status = s->final_status;
    if (errmsg != NULL)
        *errmsg = s->final_msg != NULL ? msg_printf("%s", s->final_msg) : NULL;
    return NULL;
}

ProtobufCMessage *ipam_stream_next(ipam_stream *s, int *status, char **errmsg)
{
    if (errmsg != NULL)
        *errmsg = NULL;
    *status = GRPC_STATUS_OK;
    if (s->done) {
        finish_start(s);
        finish_status(s);
        return stream_end(s, status, errmsg);
    }

    grpc_byte_buffer *recv = NULL;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &recv;
    grpc_call_error err = grpc_call_start_batch(s->call, &op, 1, TAG_MESSAGE, NULL);
    if (err == GRPC_CALL_OK)
        pluck(s->cq, TAG_MESSAGE);
    /* A message follows the initial metadata, and a failed call completes
     * every batch, so this does not block once a message or the end came. */
    finish_start(s);

    if (recv != NULL) {
        ProtobufCMessage *m = unpack_message(s->response_desc, recv);
        grpc_byte_buffer_destroy(recv);
        if (m != NULL)
            return m;
        /* A response we cannot read ends the stream: later ones would be
         * read out of context. */
        stream_fail(s, GRPC_STATUS_INTERNAL,
                    msg_printf("cannot parse a stream message as %s", s->response_desc->name));
        grpc_call_cancel(s->call, NULL);
    } else if (err != GRPC_CALL_OK) {
        stream_fail(s, GRPC_STATUS_INTERNAL,
                    msg_printf("cannot read the stream (grpc_call_error %d)", (int)err));
        grpc_call_cancel(s->call, NULL);
    }
    finish_status(s);
    return stream_end(s, status, errmsg);
}

void ipam_stream_cancel(ipam_stream *s)
{
    if (s != NULL && s->call != NULL)
        grpc_call_cancel(s->call, NULL);
}

void ipam_stream_close(ipam_stream *s)
{
    if (s == NULL)
        return;
    if (s->call != NULL && s->status_pending)
        grpc_call_cancel(s->call, NULL);
    if (s->cq != NULL) {
        finish_start(s);
        finish_status(s);
    }
    if (s->call != NULL)
        grpc_call_unref(s->call);
    destroy_queue(s->cq);
    if (s->request != NULL)
        grpc_byte_buffer_destroy(s->request);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_slice_unref(s->details);
    gpr_free((void *)s->error_string);
    free(s->final_msg);
    free(s);
}
