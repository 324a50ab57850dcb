/* The Kubernetes API client: blocking requests and watch streams over libcurl.
 *
 * A struct kube holds a copy of the configuration, one curl easy handle for
 * requests (its connections are kept alive and reused) and one curl multi handle
 * that drives every watch stream. It is meant for one single-threaded event loop:
 * every function here must be called from the thread that owns the struct kube,
 * except kube_wakeup(), which any thread may call while the struct exists.
 *
 * Authentication and TLS, per request and per watch: "Authorization: Bearer T" when
 * the configuration has a token; token_file is stat'ed before each request and
 * re-read when its inode, size, mtime or ctime changed (service-account token
 * rotation; when a re-read fails, the last token read is kept). The CA is the PEM
 * text or the file from the configuration, and then only that CA is trusted;
 * neither means the system's trust store. insecure turns verification off.
 * Every request carries Accept: application/json and User-Agent:
 * k8s-adapter/VERSION (K8S_ADAPTER_VERSION when kube.c is compiled with that
 * definition, else "dev"), and accepts gzip. A token with control characters is refused.
 * libcurl honours the proxy environment variables (https_proxy, no_proxy...), as
 * client-go does. curl's signal use is off (CURLOPT_NOSIGNAL); the program should
 * ignore SIGPIPE, as daemons do anyway.
 *
 * Errors are strings that start with the method and URL and quote the cause, e.g.
 * "GET https://10.0.0.1:443/api/v1/services: Couldn't connect to server (Failed
 * to connect to 10.0.0.1 port 443 after 3 ms: Connection refused)". Tokens never
 * appear in them.
 *
 * Bounds: connect timeout 10 s; requests take at most 30 s in total; a request's
 * response body is refused above 64 MiB; a single watch line is refused above
 * 16 MiB. Watches have no total timeout: TCP keepalive (first probe after 30 s of
 * silence, then every 10 s) detects a vanished peer within about 2 minutes with
 * Linux's default of 9 probes. Pass timeoutSeconds= in watch queries so that the
 * server ends quiet watches itself. */
#ifndef K8S_ADAPTER_KUBE_H
#define K8S_ADAPTER_KUBE_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "kubeconfig.h"

struct kube;
struct kube_watch;

/* Creates a client for cfg, which is copied (the caller keeps ownership of cfg and
 * may free it at once). Reads token_file once to fail early when it is unreadable.
 * Returns NULL with err set on failure. */
struct kube *kube_new(const struct kube_config *cfg, char *err, size_t errlen);

/* Aborts every open watch without calling its closed callback, frees them and k.
 * k may be NULL. Must not be called from a watch callback. */
void kube_free(struct kube *k);

/* Called after every kube_request and once at the end of every watch (however
 * it ended, kube_watch_close and kube_free included), on the thread that made
 * it: method, the path and query as given, whether it is a watch, and the
 * HTTP status, or -1 when no response arrived. For metrics. */
typedef void (*kube_observer)(void *ctx, const char *method, const char *path_and_query,
                              bool watch, int status);
void kube_set_observer(struct kube *k, kube_observer fn, void *ctx);

/* Sends one request and waits for the whole response (at most 30 s); watch streams
 * do not progress meanwhile. method is "GET", "POST", "PUT", "PATCH", "DELETE"...;
 * path_and_query starts with '/' and is appended to the server URL as is (the
 * caller escapes it). content_type and body may be NULL (no body).
 *
 * Returns the HTTP status, and the response body in *resp_body (malloc'd,
 * NUL-terminated, "" when empty; the caller frees it). For a status >= 400, err also
 * holds "METHOD URL: HTTP 409: <Status message or start of the body>" for logging.
 * Returns -1 on transport failure (connection, TLS, timeout, body over 64 MiB, out
 * of memory) with err set and *resp_body NULL. resp_body may be NULL to discard the
 * body. May be called from watch callbacks. */
int kube_request(struct kube *k, const char *method, const char *path_and_query,
                 const char *content_type, const char *body, char **resp_body, char *err,
                 size_t errlen);

/* What a watch reports; both callbacks are required and are only ever called from
 * kube_run(), never from inside curl, so they may call any function here except
 * kube_run() and kube_free(). */
struct kube_watch_ops {
    /* One complete line {"type": T, "object": O} of the stream: type is "ADDED",
     * "MODIFIED", "DELETED", "BOOKMARK" or "ERROR" (then object is a Status, e.g.
     * code 410 when the resourceVersion is too old); it is passed on as is. type and
     * object belong to the library and are valid only during the call. */
    void (*event)(void *ctx, const char *type, cJSON *object);
    /* The stream ended, called exactly once unless the watch was closed with
     * kube_watch_close() first. http_status is the response's status, or -1 when no
     * response arrived. err is NULL for a clean end of a 200 stream; else it says
     * why: an HTTP error with the Status message ("GET URL: HTTP 500: etcd is
     * down"), a transport error, "malformed watch line `...'", a line over 16 MiB.
     * Events received before the end have been delivered. The library frees the
     * watch when closed returns: the caller must drop its pointer. */
    void (*closed)(void *ctx, int http_status, const char *err);
};

/* Starts a GET watch stream for path_and_query (which should hold watch=1 or
 * watch=true, and usually resourceVersion=, allowWatchBookmarks=true and
 * timeoutSeconds=). ops is copied; ctx is passed to the callbacks. Data flows
 * during kube_run(). Failures to start (e.g. the token file vanished) are reported
 * through closed with http_status -1 at the next kube_run(). Returns NULL only when
 * out of memory (no callback then). */
struct kube_watch *kube_watch_open(struct kube *k, const char *path_and_query,
                                   const struct kube_watch_ops *ops, void *ctx);

/* Aborts a watch whose closed callback has not been called: no callback follows
 * and w is freed (at once, or at the end of the current kube_run() when called from
 * a callback; no further event of w is delivered either way). Calling it for w from
 * w's own closed callback is a harmless no-op. w may be NULL. */
void kube_watch_close(struct kube_watch *w);

/* During a closed callback for an HTTP error: the seconds its Retry-After header
 * asked the client to wait (the API server sends it with 429 and some 503s), at
 * most 3600; 0 when there was none, and outside closed callbacks. */
long kube_retry_after(const struct kube *k);

/* Waits up to timeout_ms (0: do not wait) for watch data or kube_wakeup(), then
 * moves every transfer forward and calls the callbacks. Returns the number of
 * watches still open, or -1 when curl's multi interface failed or when called from
 * a callback. */
int kube_run(struct kube *k, int timeout_ms);

/* Makes a kube_run() that is waiting, or the next one, return early. Safe from any
 * thread while k exists (not from signal handlers). */
void kube_wakeup(struct kube *k);

/* Returns .message of a Kubernetes Status JSON body, or NULL when body is NULL, not
 * JSON or has no string message. The text lives in a per-thread buffer (at most
 * 1023 bytes, longer messages are cut) valid until the next call in that thread. */
const char *kube_status_message(const char *body);

#endif
