/* libipamclient: blocking gRPC calls to ipamd (gRPC C core, protobuf-c messages).
 *
 * Ownership and lifetime:
 * - ipam_client_open() initialises gRPC (grpc_init) and returns a client that
 *   owns one channel; ipam_client_close() destroys it and drops that gRPC
 *   reference (grpc_shutdown). Close every stream of a client before the client.
 * - Requests are borrowed: the library packs them and never keeps them.
 * - Responses are the caller's: free each with protobuf_c_message_free_unpacked(m, NULL).
 * - Error messages (char **errmsg) are the caller's: free() them. errmsg may be
 *   NULL when the caller does not want the message; on success *errmsg is NULL.
 *
 * Errors: calls return a gRPC status code (grpc_status_code values, 0 = OK).
 * Failures that happen on this side of the wire are reported as codes too:
 * INTERNAL for a request that cannot be sent or a response that cannot be
 * parsed, RESOURCE_EXHAUSTED when memory runs out, DEADLINE_EXCEEDED when the
 * client's timeout passes, UNAVAILABLE when the server cannot be reached.
 * The message is the server's status message, or else a description of the
 * local failure, or else the code's name; it is never NULL after a failure
 * unless memory ran out.
 *
 * Threads: one client may be used from several threads at once (each call has
 * its own completion queue), except that ipam_client_set_timeout() must not
 * race with calls. A stream is used by one thread; only ipam_stream_cancel()
 * may be called from another.
 *
 * Every call blocks until it completes; unary calls are bounded by the client's
 * timeout (30 s unless set), streams have no deadline. */
#ifndef IPAM_CLIENT_H
#define IPAM_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "grpc/health/v1/health.pb-c.h"
#include "ipam/v1/ipam.pb-c.h"

#define IPAM_CLIENT_DEFAULT_TIMEOUT_MS 30000u

/* The methods this client knows, indexing ipam_methods[]. */
typedef enum {
    IPAM_METHOD_APPLY_POOL,
    IPAM_METHOD_GET_POOL,
    IPAM_METHOD_LIST_POOLS,
    IPAM_METHOD_DELETE_POOL,
    IPAM_METHOD_ALLOCATE,
    IPAM_METHOD_RELEASE,
    IPAM_METHOD_RENEW,
    IPAM_METHOD_GET_LEASE,
    IPAM_METHOD_LIST_LEASES,
    IPAM_METHOD_WATCH,
    IPAM_METHOD_HEALTH_CHECK,
    IPAM_METHOD_HEALTH_WATCH,
    IPAM_METHOD_COUNT
} ipam_method_id;

typedef struct {
    const char *name; /* "Allocate" */
    const char *path; /* "/ipam.v1.Ipam/Allocate" */
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
    bool server_streaming;
} ipam_method;

/* One entry per ipam_method_id, static storage. */
extern const ipam_method ipam_methods[IPAM_METHOD_COUNT];

typedef struct ipam_client ipam_client;
typedef struct ipam_stream ipam_stream;

/* Opens a channel to target ("host:port", "unix:/path", "unix-abstract:name")
 * with insecure credentials.
 * Connecting is lazy: an unreachable server shows up as UNAVAILABLE on the
 * first call. Returns NULL only when memory runs out or target is NULL. */
ipam_client *ipam_client_open(const char *target);

/* TLS settings of a channel: paths of PEM files, each optional. ipamd serves
 * TLS on TCP listeners only; its Unix sockets are plaintext. */
typedef struct ipam_tls {
    const char *ca_file;     /* CAs the server's certificate must chain to; NULL: gRPC's
                                default roots ($GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, else its own) */
    const char *cert_file;   /* client certificate chain for mutual TLS, with key_file */
    const char *key_file;    /* its private key */
    const char *server_name; /* name the server's certificate must carry; NULL: target's host */
} ipam_tls;

/* Opens a channel like ipam_client_open() over TLS (insecure when tls is NULL).
 * The files are read now; the library keeps no pointer into tls. Returns NULL
 * with *errmsg set (quoting the file and the cause) when a file cannot be read
 * or is not PEM, when only one of cert_file and key_file is given, or when
 * memory runs out. A server that fails verification (wrong CA, wrong name,
 * client certificate refused) shows up as UNAVAILABLE on the first call. */
ipam_client *ipam_client_open_tls(const char *target, const ipam_tls *tls, char **errmsg);

/* Closes the channel and releases the client. NULL is ignored. */
void ipam_client_close(ipam_client *c);

/* Sets the deadline of each later unary call, in milliseconds from its start;
 * 0 means no deadline. */
void ipam_client_set_timeout(ipam_client *c, uint32_t timeout_ms);

/* Calls the unary method at path (e.g. "/ipam.v1.Ipam/Allocate") with req and
 * waits for the answer. On OK, *resp is the unpacked response (of
 * response_desc); otherwise *resp is NULL. Returns the gRPC status code. */
int ipam_client_call(ipam_client *c, const char *path, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *response_desc, ProtobufCMessage **resp,
                     char **errmsg);

/* ipam_client_call() for a method of the table. req must be of the method's
 * request type and the method must be unary, else INVALID_ARGUMENT. */
int ipam_client_invoke(ipam_client *c, ipam_method_id m, const ProtobufCMessage *req,
                       ProtobufCMessage **resp, char **errmsg);

/* Asks grpc.health.v1.Health/Check about service ("" for the whole server).
 * On OK, *serving is a Grpc__Health__V1__HealthCheckResponse__ServingStatus. */
int ipam_client_health(ipam_client *c, const char *service, int *serving, char **errmsg);

/* Starts the server-streaming method at path with req. Failures (including
 * local ones) are reported by the first ipam_stream_next(). Returns NULL only
 * when memory runs out. */
ipam_stream *ipam_client_stream_open(ipam_client *c, const char *path, const ProtobufCMessage *req,
                                     const ProtobufCMessageDescriptor *response_desc);

/* ipam_client_stream_open() for a streaming method of the table (a wrong
 * request type or a unary method fails the stream with INVALID_ARGUMENT). */
ipam_stream *ipam_client_stream_invoke(ipam_client *c, ipam_method_id m,
                                       const ProtobufCMessage *req);

/* Waits for the next message of the stream and returns it (the caller's).
 * Returns NULL at the end of the stream: then *status is the final status
 * (OK when the server ended it cleanly, CANCELLED after ipam_stream_cancel())
 * and *errmsg its message; every later call returns NULL with the same status. */
ProtobufCMessage *ipam_stream_next(ipam_stream *s, int *status, char **errmsg);

/* Cancels the stream; a blocked ipam_stream_next() returns NULL soon after.
 * Safe from any thread, any number of times, until ipam_stream_close(). */
void ipam_stream_cancel(ipam_stream *s);

/* Cancels the stream if it is still open and releases it. NULL is ignored. */
void ipam_stream_close(ipam_stream *s);

/* "OK", "CANCELLED", ... "UNAUTHENTICATED"; "UNKNOWN_CODE" for others. */
const char *ipam_status_name(int code);

#endif
