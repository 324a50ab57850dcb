/* Tests of the Kubernetes API client (kube.h) against a tiny local HTTP(S) server, server.py.
 *
 * Usage: test_kube_client PYTHON SERVER_PY GROUP, where GROUP is one of the names in
 * the groups table; each group starts its own server on ephemeral ports. */
#include "kube.h"

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define NOTE "line\nbreak \xc3\xbc"

static char dir[64]; /* Token files and TLS material. */
static int http_port, tls_port;
static pid_t server_pid = -1;
static int server_stdin = -1;

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts server.py and reads its ports; it exits when its stdin closes. */
static int start_server(const char *python, const char *script, bool tls)
{
    int in[2], out[2];
    char line[64], *end;
    FILE *f;

    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
        return -1;
    server_pid = fork();
    if (server_pid < 0)
        return -1;
    if (server_pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        if (tls)
            execl(python, python, script, "--tls-dir", dir, (char *)NULL);
        else
            execl(python, python, script, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    server_stdin = in[1];
    f = fdopen(out[0], "r");
    if (f == NULL || fgets(line, sizeof line, f) == NULL) {
        fprintf(stderr, "server.py did not start\n");
        if (f != NULL)
            fclose(f);
        return -1;
    }
    fclose(f);
    http_port = (int)strtol(line, &end, 10);
    tls_port = (int)strtol(end, NULL, 10);
    return http_port > 0 ? 0 : -1;
}

static void stop_server(void)
{
    if (server_stdin >= 0)
        close(server_stdin);
    if (server_pid > 0)
        waitpid(server_pid, NULL, 0);
}

/* A client for the plain server with an optional static token. */
static struct kube *plain_client(const char *token)
{
    struct kube_config cfg = {0};
    char url[64], err[512];
    struct kube *k;

    snprintf(url, sizeof url, "http://127.0.0.1:%d", http_port);
    cfg.server = url;
    cfg.token = (char *)token;
    k = kube_new(&cfg, err, sizeof err);
    CHECK_MSG(k != NULL, "kube_new: %s", err);
    return k;
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

/* Parses a JSON response body and returns a string member (in a static buffer). */
static const char *json_str(const char *body, const char *key)
{
    static char out[512];
    cJSON *j = cJSON_Parse(body ? body : "");
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    const char *r = NULL;

    if (cJSON_IsString(v)) {
        snprintf(out, sizeof out, "%s", v->valuestring);
        r = out;
    }
    cJSON_Delete(j);
    return r;
}

/* ---- watch recorder ---- */

struct rec {
    struct kube *k;
    struct kube_watch *w;
    int events;
    int order_errors; /* Events whose name is not svc-<index>. */
    int bad_objects;  /* Services whose note did not survive intact. */
    char names[256];  /* The first names, space-separated. */
    char last_type[32];
    cJSON *last_object; /* A copy of the last object. */
    int closed;
    int status;
    bool err_null;
    char err[1024];
    int close_at;            /* Close the watch from the event callback at this count. */
    bool try_nested_run;     /* Call kube_run from the event callback. */
    int nested_run_rc;       /* What that returned. */
    const char *reopen_path; /* Open this watch from the closed callback, into reopened. */
    struct rec *reopened;
};

static void on_event(void *ctx, const char *type, cJSON *obj);
static void on_closed(void *ctx, int status, const char *err);
static const struct kube_watch_ops rec_ops = {.event = on_event, .closed = on_closed};

static void on_event(void *ctx, const char *type, cJSON *obj)
{
    struct rec *r = ctx;
    cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    cJSON *name = cJSON_GetObjectItemCaseSensitive(md, "name");
    cJSON *note = cJSON_GetObjectItemCaseSensitive(obj, "note");
    char want[32];
    size_t len = strlen(r->names);

    snprintf(r->last_type, sizeof r->last_type, "%s", type);
    cJSON_Delete(r->last_object);
    r->last_object = cJSON_Duplicate(obj, true);
    if (cJSON_IsString(name)) {
        snprintf(want, sizeof want, "svc-%d", r->events);
        if (strcmp(name->valuestring, want) != 0)
            r->order_errors++;
        if (!cJSON_IsString(note) || strcmp(note->valuestring, NOTE) != 0)
            r->bad_objects++;
        if (len + strlen(name->valuestring) + 2 < sizeof r->names)
            snprintf(r->names + len, sizeof r->names - len, "%s ", name->valuestring);
    }
    r->events++;
    if (r->try_nested_run)
        r->nested_run_rc = kube_run(r->k, 0);
    if (r->close_at > 0 && r->events == r->close_at) {
        kube_watch_close(r->w);
        r->w = NULL;
    }
}

static void on_closed(void *ctx, int status, const char *err)
{
    struct rec *r = ctx;

    r->closed++;
    r->status = status;
    r->err_null = err == NULL;
    snprintf(r->err, sizeof r->err, "%s", err ? err : "");
    kube_watch_close(r->w); /* A no-op from the watch's own closed callback. */
    r->w = NULL;
    if (r->reopen_path != NULL && r->reopened != NULL) {
        r->reopened->k = r->k;
        r->reopened->w = kube_watch_open(r->k, r->reopen_path, &rec_ops, r->reopened);
    }
}

static void rec_open(struct rec *r, struct kube *k, const char *path)
{
    r->k = k;
    r->w = kube_watch_open(k, path, &rec_ops, r);
    CHECK_MSG(r->w != NULL, "kube_watch_open %s", path);
}

static void rec_clear(struct rec *r)
{
    cJSON_Delete(r->last_object);
    r->last_object = NULL;
}

/* Runs k until every recorder closed or limit_ms passed. */
static bool run_until_closed(struct kube *k, struct rec *r, size_t n, int limit_ms)
{
    long long end = now_ms() + limit_ms;

    for (;;) {
        size_t done = 0;

        for (size_t i = 0; i < n; i++)
            done += r[i].closed > 0;
        if (done == n)
            return true;
        if (now_ms() > end)
            return false;
        if (kube_run(k, 50) < 0)
            return false;
    }
}

/* Runs k until r saw at least n events or limit_ms passed. */
static bool run_until_events(struct kube *k, struct rec *r, int n, int limit_ms)
{
    long long end = now_ms() + limit_ms;

    while (r->events < n && r->closed == 0 && now_ms() < end)
        if (kube_run(k, 50) < 0)
            return false;
    return r->events >= n;
}

/* ---- requests ---- */

static void test_requests(void)
{
    struct kube *k = plain_client("tok-static");
    char *body = NULL, err[1024], want[1024];
    int st;

    if (k == NULL)
        return;
    st = kube_request(k, "GET", "/echo?x=1", NULL, NULL, &body, err, sizeof err);
    if (CHECK_MSG(st == 200, "GET /echo: %d %s", st, err)) {
        CHECK_EQ_STR(json_str(body, "method"), "GET");
        CHECK_EQ_STR(json_str(body, "path"), "/echo?x=1");
        CHECK_EQ_STR(json_str(body, "authorization"), "Bearer tok-static");
        CHECK_EQ_STR(json_str(body, "accept"), "application/json");
        CHECK(strncmp(or_empty(json_str(body, "user_agent")), "k8s-adapter/", 12) == 0);
        CHECK_EQ_STR(err, "");
    }
    free(body);

    st = kube_request(k, "PATCH", "/echo", "application/merge-patch+json", "{\"a\":1}", &body, err,
                      sizeof err);
    if (CHECK_EQ_INT(st, 200)) {
        CHECK_EQ_STR(json_str(body, "method"), "PATCH");
        CHECK_EQ_STR(json_str(body, "content_type"), "application/merge-patch+json");
        CHECK_EQ_STR(json_str(body, "body"), "{\"a\":1}");
    }
    free(body);
    st = kube_request(k, "POST", "/echo", NULL, "{}", &body, err, sizeof err);
    if (CHECK_EQ_INT(st, 200)) {
        CHECK_EQ_STR(json_str(body, "method"), "POST");
        CHECK_EQ_STR(json_str(body, "content_type"), "application/json");
    }
    free(body);
    st = kube_request(k, "DELETE", "/echo", NULL, NULL, &body, err, sizeof err);
    if (CHECK_EQ_INT(st, 200))
        CHECK_EQ_STR(json_str(body, "method"), "DELETE");
    free(body);
    /* A discarded body. */
    CHECK_EQ_INT(kube_request(k, "GET", "/echo", NULL, NULL, NULL, err, sizeof err), 200);

    st = kube_request(k, "GET", "/status/409", NULL, NULL, &body, err, sizeof err);
    CHECK_EQ_INT(st, 409);
    CHECK_EQ_STR(kube_status_message(body), "status 409 for testing");
    snprintf(want, sizeof want,
             "GET http://127.0.0.1:%d/status/409: HTTP 409: status 409 for testing", http_port);
    CHECK_EQ_STR(err, want);
    free(body);
    st = kube_request(k, "GET", "/text404", NULL, NULL, &body, err, sizeof err);
    CHECK_EQ_INT(st, 404);
    snprintf(want, sizeof want, "GET http://127.0.0.1:%d/text404: HTTP 404: 404 page not found",
             http_port);
    CHECK_EQ_STR(err, want);
    CHECK_EQ_STR(body, "404 page not found\n");
    free(body);

    /* Bodies over 64 MiB are refused whether their length is announced or not. */
    st = kube_request(k, "GET", "/big?n=67108865", NULL, NULL, &body, err, sizeof err);
    CHECK_EQ_INT(st, -1);
    CHECK(body == NULL);
    snprintf(want, sizeof want,
             "GET http://127.0.0.1:%d/big?n=67108865: response body exceeds 64 MiB", http_port);
    CHECK_EQ_STR(err, want);
    st = kube_request(k, "GET", "/big?n=67108865&chunked=1", NULL, NULL, &body, err, sizeof err);
    CHECK_EQ_INT(st, -1);
    CHECK(strstr(err, "response body exceeds 64 MiB") != NULL);
    st = kube_request(k, "GET", "/big?n=3000000&chunked=1", NULL, NULL, &body, err, sizeof err);
    CHECK_EQ_INT(st, 200);
    CHECK_EQ_INT(body ? strlen(body) : 0, 3000000);
    free(body);
    /* The connection is still good after refusals. */
    CHECK_EQ_INT(kube_request(k, "GET", "/echo", NULL, NULL, NULL, err, sizeof err), 200);
    kube_free(k);
}

static void test_transport_errors(void)
{
    struct kube_config cfg = {.server = "http://127.0.0.1:1"};
    char err[1024] = "", *body = (char *)"x";
    struct kube *k;
    const char *prefix = "GET http://127.0.0.1:1/api/v1/services: Couldn't connect to server";

    k = kube_new(&cfg, err, sizeof err);
    if (!CHECK_MSG(k != NULL, "%s", err))
        return;
    CHECK_EQ_INT(kube_request(k, "GET", "/api/v1/services", NULL, NULL, &body, err, sizeof err),
                 -1);
    CHECK(body == NULL);
    CHECK_MSG(strncmp(err, prefix, strlen(prefix)) == 0, "got \"%s\"", err);
    kube_free(k);

    cfg.server = "ftp://x";
    CHECK(kube_new(&cfg, err, sizeof err) == NULL);
    CHECK_EQ_STR(err, "server `ftp://x' is not an http:// or https:// URL");
    cfg.server = "http://127.0.0.1:1";
    cfg.token_file = (char *)"/nonexistent/token";
    CHECK(kube_new(&cfg, err, sizeof err) == NULL);
    CHECK_EQ_STR(err, "token file `/nonexistent/token': No such file or directory");
    cfg.token_file = NULL;
    cfg.token = (char *)"abc\r\nX-Injected: 1";
    CHECK(kube_new(&cfg, err, sizeof err) == NULL);
    CHECK_EQ_STR(err, "the token contains control characters");
}

static void test_status_message(void)
{
    static const struct {
        const char *body, *want;
    } cases[] = {
        {"{\"kind\":\"Status\",\"message\":\"services \\\"a\\\" not found\",\"code\":404}",
         "services \"a\" not found"},
        {"{\"kind\":\"Status\",\"code\":500}", NULL},
        {"{\"message\":42}", NULL},
        {"[\"message\"]", NULL},
        {"not json", NULL},
        {"", NULL},
        {NULL, NULL},
    };
    char longbody[3000];
    const char *m;

    for (size_t i = 0; i < N(cases); i++)
        CHECK_EQ_STR(kube_status_message(cases[i].body), cases[i].want);
    snprintf(longbody, sizeof longbody, "{\"message\":\"%02000d\"}", 0);
    m = kube_status_message(longbody);
    CHECK(m != NULL && strlen(m) == 1023);
}

/* ---- token rotation ---- */

static void write_token(const char *name, const char *text)
{
    char path[128];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "w");
    if (!CHECK(f != NULL))
        return;
    fputs(text, f);
    fclose(f);
}

static void test_token_rotation(void)
{
    struct kube_config cfg = {0};
    char url[64], path[128], tmp[128], err[512], *body = NULL;
    struct rec r = {0};
    struct kube *k;

    snprintf(url, sizeof url, "http://127.0.0.1:%d", http_port);
    snprintf(path, sizeof path, "%s/token", dir);
    snprintf(tmp, sizeof tmp, "%s/token.new", dir);
    write_token("token", "one\n");
    cfg.server = url;
    cfg.token = (char *)"static-loses";
    cfg.token_file = path;
    k = kube_new(&cfg, err, sizeof err);
    if (!CHECK_MSG(k != NULL, "%s", err))
        return;
    CHECK_EQ_INT(kube_request(k, "GET", "/echo", NULL, NULL, &body, err, sizeof err), 200);
    CHECK_EQ_STR(json_str(body, "authorization"), "Bearer one");
    free(body);

    /* Replaced by rename, as the kubelet does with its ..data symlink. */
    write_token("token.new", "two\n");
    CHECK(rename(tmp, path) == 0);
    CHECK_EQ_INT(kube_request(k, "GET", "/echo", NULL, NULL, &body, err, sizeof err), 200);
    CHECK_EQ_STR(json_str(body, "authorization"), "Bearer two");
    free(body);

    /* Rewritten in place. */
    write_token("token", "  three-longer \n");
    CHECK_EQ_INT(kube_request(k, "GET", "/echo", NULL, NULL, &body, err, sizeof err), 200);
    CHECK_EQ_STR(json_str(body, "authorization"), "Bearer three-longer");
    free(body);

    /* Watches carry the current token too. */
    write_token("token.new", "four\n");
    CHECK(rename(tmp, path) == 0);
    rec_open(&r, k, "/watch/echo");
    CHECK(run_until_closed(k, &r, 1, 5000));
    CHECK_EQ_INT(r.events, 1);
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(r.last_object, "authorization")),
                 "Bearer four");
    CHECK(strncmp(or_empty(cJSON_GetStringValue(cJSON_GetObjectItem(r.last_object, "user_agent"))),
                  "k8s-adapter/", 12) == 0);
    rec_clear(&r);

    /* A token file with a line break inside is not used; the last token is kept. */
    write_token("token.new", "five\nX-Injected: 1\n");
    CHECK(rename(tmp, path) == 0);
    CHECK_EQ_INT(kube_request(k, "GET", "/echo", NULL, NULL, &body, err, sizeof err), 200);
    CHECK_EQ_STR(json_str(body, "authorization"), "Bearer four");
    free(body);

    /* A vanished token file keeps the last token. */
    CHECK(unlink(path) == 0);
    CHECK_EQ_INT(kube_request(k, "GET", "/echo", NULL, NULL, &body, err, sizeof err), 200);
    CHECK_EQ_STR(json_str(body, "authorization"), "Bearer four");
    free(body);
    kube_free(k);
}

/* ---- watches: chunking ---- */

static void test_chunking(void)
{
    struct kube *k = plain_client(NULL);
    struct rec one = {0}, many = {0}, nonl = {0}, *split;
    char *stream = NULL, err[512], path[64];
    size_t len, batch = 64;

    if (k == NULL)
        return;
    rec_open(&one, k, "/watch/bytes?n=3");
    CHECK(run_until_closed(k, &one, 1, 10000));
    CHECK_EQ_STR(one.names, "svc-0 svc-1 svc-2 ");
    CHECK_EQ_INT(one.bad_objects, 0);
    CHECK_EQ_INT(one.status, 200);
    CHECK_MSG(one.err_null, "byte-by-byte: %s", one.err);
    rec_clear(&one);

    /* Every split point of a 3-event stream, 64 watches at a time on one multi handle. */
    CHECK_EQ_INT(kube_request(k, "GET", "/watch/many?n=3", NULL, NULL, &stream, err, sizeof err),
                 200);
    len = stream ? strlen(stream) : 0;
    free(stream);
    CHECK(len > 300);
    split = calloc(len, sizeof *split);
    for (size_t at = 1; at < len; at += batch) {
        size_t n = at + batch <= len ? batch : len - at;

        for (size_t i = 0; i < n; i++) {
            snprintf(path, sizeof path, "/watch/split?n=3&at=%zu", at + i);
            rec_open(&split[at + i], k, path);
        }
        CHECK(run_until_closed(k, &split[at], n, 20000));
    }
    for (size_t at = 1; at < len; at++) {
        CHECK_MSG(strcmp(split[at].names, "svc-0 svc-1 svc-2 ") == 0 && split[at].err_null &&
                      split[at].bad_objects == 0 && split[at].closed == 1,
                  "split at %zu: names \"%s\", err \"%s\", bad %d, closed %d", at, split[at].names,
                  split[at].err, split[at].bad_objects, split[at].closed);
        rec_clear(&split[at]);
    }
    free(split);

    rec_open(&many, k, "/watch/many?n=5000");
    CHECK(run_until_closed(k, &many, 1, 20000));
    CHECK_EQ_INT(many.events, 5000);
    CHECK_EQ_INT(many.order_errors, 0);
    CHECK_EQ_INT(many.bad_objects, 0);
    CHECK(many.err_null);
    rec_clear(&many);

    /* The last line may lack its newline. */
    rec_open(&nonl, k, "/watch/nonl");
    CHECK(run_until_closed(k, &nonl, 1, 5000));
    CHECK_EQ_STR(nonl.names, "svc-0 svc-1 ");
    CHECK(nonl.err_null);
    rec_clear(&nonl);
    kube_free(k);
}

/* ---- watches: how they end ---- */

static void test_endings(void)
{
    struct kube *k = plain_client(NULL);
    struct rec bad = {0}, gone = {0}, again = {0}, abrupt = {0}, e500 = {0}, longl = {0};
    struct rec refused = {0};
    struct kube *dead;
    struct kube_config cfg = {.server = "http://127.0.0.1:1"};
    char want[512], err[512];
    cJSON *code;

    if (k == NULL)
        return;
    bad.try_nested_run = true;
    rec_open(&bad, k, "/watch/malformed");
    gone.reopen_path = "/watch/many?n=2";
    gone.reopened = &again;
    rec_open(&gone, k, "/watch/gone");
    rec_open(&abrupt, k, "/watch/abrupt");
    rec_open(&e500, k, "/watch/500");
    rec_open(&longl, k, "/watch/long");
    CHECK(run_until_closed(k, &bad, 1, 10000));
    CHECK(run_until_closed(k, &gone, 1, 10000));
    CHECK(run_until_closed(k, &again, 1, 10000));
    CHECK(run_until_closed(k, &abrupt, 1, 10000));
    CHECK(run_until_closed(k, &e500, 1, 10000));
    CHECK(run_until_closed(k, &longl, 1, 30000));
    for (int i = 0; i < 5; i++)
        kube_run(k, 10);

    /* A malformed line ends the watch; the events before it were delivered. */
    CHECK_EQ_STR(bad.names, "svc-0 svc-1 ");
    CHECK_EQ_INT(bad.closed, 1);
    CHECK_EQ_INT(bad.status, 200);
    snprintf(want, sizeof want,
             "GET http://127.0.0.1:%d/watch/malformed: malformed watch line `this is not json'",
             http_port);
    CHECK_EQ_STR(bad.err, want);
    CHECK_EQ_INT(bad.nested_run_rc, -1);

    /* A 410 ERROR event is an event like the others; the stream then ends cleanly. */
    CHECK_EQ_INT(gone.events, 2);
    CHECK_EQ_STR(gone.last_type, "ERROR");
    code = cJSON_GetObjectItem(gone.last_object, "code");
    CHECK(cJSON_IsNumber(code) && code->valueint == 410);
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(gone.last_object, "reason")), "Expired");
    CHECK_EQ_INT(gone.closed, 1);
    CHECK_EQ_INT(gone.status, 200);
    CHECK(gone.err_null);
    /* A watch opened from a closed callback runs. */
    CHECK_EQ_STR(again.names, "svc-0 svc-1 ");
    CHECK(again.err_null);

    /* An abrupt close: the complete event counts, the partial line does not. */
    CHECK_EQ_STR(abrupt.names, "svc-0 ");
    CHECK_EQ_INT(abrupt.closed, 1);
    CHECK_EQ_INT(abrupt.status, 200);
    snprintf(want, sizeof want, "GET http://127.0.0.1:%d/watch/abrupt: ", http_port);
    CHECK_MSG(!abrupt.err_null && strncmp(abrupt.err, want, strlen(want)) == 0, "abrupt: \"%s\"",
              abrupt.err);

    /* An HTTP error carries the Status message. */
    CHECK_EQ_INT(e500.events, 0);
    CHECK_EQ_INT(e500.closed, 1);
    CHECK_EQ_INT(e500.status, 500);
    snprintf(want, sizeof want, "GET http://127.0.0.1:%d/watch/500: HTTP 500: etcd is down",
             http_port);
    CHECK_EQ_STR(e500.err, want);

    /* A line over 16 MiB. */
    CHECK_EQ_INT(longl.events, 1);
    CHECK_EQ_INT(longl.closed, 1);
    CHECK_EQ_INT(longl.status, 200);
    snprintf(want, sizeof want, "GET http://127.0.0.1:%d/watch/long: watch line exceeds 16 MiB",
             http_port);
    CHECK_EQ_STR(longl.err, want);

    rec_clear(&bad);
    rec_clear(&gone);
    rec_clear(&again);
    rec_clear(&abrupt);
    rec_clear(&longl);
    CHECK_EQ_INT(kube_run(k, 0), 0);
    kube_free(k);

    /* No server at all. */
    dead = kube_new(&cfg, err, sizeof err);
    if (!CHECK_MSG(dead != NULL, "%s", err))
        return;
    rec_open(&refused, dead, "/api/v1/services?watch=1");
    CHECK(run_until_closed(dead, &refused, 1, 10000));
    CHECK_EQ_INT(refused.status, -1);
    CHECK_MSG(strncmp(refused.err,
                      "GET http://127.0.0.1:1/api/v1/services?watch=1: Couldn't connect to server",
                      60) == 0,
              "refused: \"%s\"", refused.err);
    kube_free(dead);
}

/* ---- closing live watches ---- */

static void test_close(void)
{
    struct kube *k = plain_client(NULL);
    struct rec outside = {0}, inside = {0}, left = {0};

    if (k == NULL)
        return;
    rec_open(&outside, k, "/watch/hang");
    inside.close_at = 1;
    rec_open(&inside, k, "/watch/hang");
    CHECK(run_until_events(k, &outside, 1, 5000));
    CHECK(run_until_events(k, &inside, 1, 5000));
    CHECK(inside.w == NULL);
    kube_watch_close(outside.w);
    kube_watch_close(NULL);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(kube_run(k, 20), 0);
    CHECK_EQ_INT(outside.closed, 0);
    CHECK_EQ_INT(inside.closed, 0);
    CHECK_EQ_INT(inside.events, 1);
    rec_clear(&outside);
    rec_clear(&inside);

    /* kube_free aborts what is still open, without callbacks. */
    rec_open(&left, k, "/watch/hang");
    CHECK(run_until_events(k, &left, 1, 5000));
    CHECK_EQ_INT(kube_run(k, 0), 1);
    kube_free(k);
    CHECK_EQ_INT(left.closed, 0);
    rec_clear(&left);
}

/* ---- kube_wakeup ---- */

static void *wake_later(void *arg)
{
    struct timespec ts = {0, 200 * 1000 * 1000};

    nanosleep(&ts, NULL);
    kube_wakeup(arg);
    return NULL;
}

static void test_wakeup(void)
{
    struct kube *k = plain_client(NULL);
    struct rec hang = {0};
    long long t0, dt;
    pthread_t th;

    if (k == NULL)
        return;
    t0 = now_ms();
    CHECK_EQ_INT(kube_run(k, 100), 0);
    dt = now_ms() - t0;
    CHECK_MSG(dt >= 80, "an idle kube_run waits its timeout: %lld ms", dt);

    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            /* The same with a silent watch whose socket is polled too. */
            rec_open(&hang, k, "/watch/hang");
            CHECK(run_until_events(k, &hang, 1, 5000));
        }
        if (!CHECK(pthread_create(&th, NULL, wake_later, k) == 0))
            break;
        t0 = now_ms();
        CHECK_EQ_INT(kube_run(k, 20000), round);
        dt = now_ms() - t0;
        CHECK_MSG(dt >= 150 && dt < 5000, "round %d: kube_run returned after %lld ms", round, dt);
        pthread_join(th, NULL);
    }
    rec_clear(&hang);
    kube_free(k);
}

/* ---- TLS ---- */

static char *slurp(const char *name)
{
    char path[128];
    FILE *f;
    char *s = NULL;
    size_t n = 0;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "r");
    if (!CHECK_MSG(f != NULL, "cannot read %s", path))
        return NULL;
    s = calloc(1, 65536);
    if (s != NULL)
        n = fread(s, 1, 65535, f);
    (void)n;
    fclose(f);
    return s;
}

static void test_tls(void)
{
    char url[64], err[1024], *body = NULL, ca_file[128], cert_file[128], key_file[128];
    char *ca = slurp("ca.crt"), *cert = slurp("client.crt"), *key = slurp("client.key");
    struct kube_config cfg = {0};
    struct rec r = {0};
    struct kube *k;
    int st;

    if (ca == NULL || cert == NULL || key == NULL)
        goto out;
    snprintf(url, sizeof url, "https://127.0.0.1:%d", tls_port);
    snprintf(ca_file, sizeof ca_file, "%s/ca.crt", dir);
    snprintf(cert_file, sizeof cert_file, "%s/client.crt", dir);
    snprintf(key_file, sizeof key_file, "%s/client.key", dir);
    cfg.server = url;

    /* PEM text (as from a kubeconfig's *-data or a CA bundle) for CA and client. */
    cfg.ca_pem = ca;
    cfg.cert_pem = cert;
    cfg.key_pem = key;
    cfg.token = (char *)"tls-token";
    k = kube_new(&cfg, err, sizeof err);
    if (CHECK_MSG(k != NULL, "%s", err)) {
        st = kube_request(k, "GET", "/echo", NULL, NULL, &body, err, sizeof err);
        if (CHECK_MSG(st == 200, "blobs: %d %s", st, err)) {
            CHECK_EQ_STR(json_str(body, "client_cn"), "adapter-client");
            CHECK_EQ_STR(json_str(body, "authorization"), "Bearer tls-token");
            CHECK_EQ_STR(json_str(body, "alpn"), "http/1.1");
        }
        free(body);
        rec_open(&r, k, "/watch/many?n=50");
        CHECK(run_until_closed(k, &r, 1, 10000));
        CHECK_EQ_INT(r.events, 50);
        CHECK_EQ_INT(r.order_errors, 0);
        CHECK(r.err_null);
        rec_clear(&r);
        kube_free(k);
    }

    /* Files, as from in-cluster ca.crt or a kubeconfig's paths. */
    memset(&cfg, 0, sizeof cfg);
    cfg.server = url;
    cfg.ca_file = ca_file;
    cfg.cert_file = cert_file;
    cfg.key_file = key_file;
    k = kube_new(&cfg, err, sizeof err);
    if (CHECK_MSG(k != NULL, "%s", err)) {
        st = kube_request(k, "GET", "/echo", NULL, NULL, &body, err, sizeof err);
        if (CHECK_MSG(st == 200, "files: %d %s", st, err))
            CHECK_EQ_STR(json_str(body, "client_cn"), "adapter-client");
        free(body);
        kube_free(k);
    }

    /* The system's trust store does not know the test CA. */
    memset(&cfg, 0, sizeof cfg);
    cfg.server = url;
    k = kube_new(&cfg, err, sizeof err);
    if (CHECK_MSG(k != NULL, "%s", err)) {
        char want[128];

        st = kube_request(k, "GET", "/echo", NULL, NULL, &body, err, sizeof err);
        CHECK_EQ_INT(st, -1);
        snprintf(want, sizeof want, "GET %s/echo: ", url);
        CHECK_MSG(strncmp(err, want, strlen(want)) == 0 && strstr(err, "certificate") != NULL,
                  "untrusted: \"%s\"", err);
        kube_free(k);
    }

    /* A CA that did not sign the server's certificate is refused too (the client
     * certificate stands in for one). */
    cfg.ca_pem = cert;
    k = kube_new(&cfg, err, sizeof err);
    if (CHECK_MSG(k != NULL, "%s", err)) {
        CHECK_EQ_INT(kube_request(k, "GET", "/echo", NULL, NULL, &body, err, sizeof err), -1);
        kube_free(k);
    }

    /* insecure skips verification. */
    cfg.ca_pem = NULL;
    cfg.insecure = true;
    k = kube_new(&cfg, err, sizeof err);
    if (CHECK_MSG(k != NULL, "%s", err)) {
        st = kube_request(k, "GET", "/echo", NULL, NULL, &body, err, sizeof err);
        if (CHECK_MSG(st == 200, "insecure: %d %s", st, err))
            CHECK_EQ_STR(json_str(body, "client_cn"), NULL);
        free(body);
        kube_free(k);
    }
out:
    free(ca);
    free(cert);
    free(key);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static const struct {
    const char *name;
    void (*run)(void);
    bool tls;
} groups[] = {
    {"requests", test_requests, false},
    {"errors", test_transport_errors, false},
    {"status", test_status_message, false},
    {"rotation", test_token_rotation, false},
    {"chunking", test_chunking, false},
    {"endings", test_endings, false},
    {"close", test_close, false},
    {"wakeup", test_wakeup, false},
    {"tls", test_tls, true},
};

static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "all_proxy",
                                         "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"};

int main(int argc, char **argv)
{
    size_t g;

    if (argc != 4) {
        fprintf(stderr, "usage: %s PYTHON SERVER_PY GROUP\n", argv[0]);
        return 2;
    }
    for (g = 0; g < N(groups); g++)
        if (strcmp(groups[g].name, argv[3]) == 0)
            break;
    if (g == N(groups)) {
        fprintf(stderr, "unknown group `%s'\n", argv[3]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* libcurl honours proxy variables (as client-go does); the test talks to 127.0.0.1. */
    for (size_t i = 0; i < N(proxy_vars); i++)
        unsetenv(proxy_vars[i]);
    snprintf(dir, sizeof dir, "/tmp/test-kube-client-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    if (start_server(argv[1], argv[2], groups[g].tls) == 0)
        groups[g].run();
    else
        CHECK_MSG(false, "cannot start %s %s", argv[1], argv[2]);
    stop_server();
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_summary();
}
