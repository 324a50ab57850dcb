/* Kubernetes API client: blocking requests and watch streams over libcurl. */
#include "kube.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The lead's CMakeLists may pass the project version; a bare build says "dev". */
#ifndef K8S_ADAPTER_VERSION
#define K8S_ADAPTER_VERSION "dev"
#endif

#define MAX_BODY ((size_t)64 << 20)
#define MAX_LINE ((size_t)16 << 20)
#define MAX_ERROR_BODY ((size_t)64 << 10)
#define MAX_TOKEN ((size_t)64 << 10)
#define CONNECT_TIMEOUT_S 10L
#define REQUEST_TIMEOUT_S 30L
#define KEEPIDLE_S 30L
#define KEEPINTVL_S 10L
#define QUOTE_MAX 80

/* A growing byte buffer, always NUL-terminated once allocated. */
struct buf {
    char *data;
    size_t len, cap;
    size_t max; /* Appending beyond this many bytes is refused. */
    bool over;  /* An append was refused because of max. */
    bool oom;   /* An append failed for lack of memory. */
};

struct kube {
    struct kube_config cfg; /* Our own deep copy. */
    char *file_token;       /* Last token read from cfg.token_file, or NULL. */
    struct stat token_st;   /* The token file when file_token was read. */
    CURL *easy;             /* For kube_request; reset between requests, connections kept. */
    CURLM *multi;           /* Drives every watch. */
    struct kube_watch *head, *tail;
    bool running; /* Inside kube_run: watches are freed by its sweep, not at once. */
    kube_observer observe;
    void *observe_ctx;
    long retry_after; /* Retry-After of the watch error being reported, seconds */
};

struct kube_watch {
    struct kube *k;
    struct kube_watch *prev, *next;
    struct kube_watch_ops ops;
    void *ctx;
    CURL *easy;
    struct curl_slist *headers;
    char *url;
    char *path;     /* As given to kube_watch_open, for the observer. */
    bool observed;  /* The observer has been told of its end. */
    struct buf in;  /* Undelivered stream bytes, or the body of an error response. */
    size_t partial; /* Bytes after the last '\n' in in. */
    long status;    /* The response status once the body started, else 0. */
    bool in_multi;
    bool start_failed; /* Could not start; closed is due at the next kube_run. */
    bool done;         /* No callback any more; the sweep or kube_watch_close frees it. */
    char reason[512];  /* Why the transfer was stopped by us, or did not start. */
    char errbuf[CURL_ERROR_SIZE];
};


static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Appends n bytes, keeping a NUL after them. Returns -1 (and sets over or oom)
 * when the buffer would exceed max or memory is short. */
static int buf_append(struct buf *b, const char *p, size_t n)
{
    if (n > b->max - b->len) {
        b->over = true;
        return -1;
    }
    if (b->data == NULL || b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *d;

        while (cap < b->len + n + 1)
            cap *= 2;
        /* A body at the limit needs max + 1 bytes, not the next power of two. */
        if (b->max < SIZE_MAX && cap > b->max + 1)
            cap = b->max + 1;
        d = realloc(b->data, cap);
        if (d == NULL) {
            b->oom = true;
            return -1;
        }
        b->data = d;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

const char *kube_status_message(const char *body)
{
    static _Thread_local char text[1024];
    const char *out = NULL;
    cJSON *j, *m;

    if (body == NULL)
        return NULL;
    j = cJSON_Parse(body);
    m = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "message") : NULL;
    if (cJSON_IsString(m) && m->valuestring != NULL) {
        snprintf(text, sizeof text, "%s", m->valuestring);
        out = text;
    }
    cJSON_Delete(j);
    return out;
}

/* Formats "METHOD URL: HTTP STATUS: WHY" where WHY is the Status message or the
 * start of the body's first line. */
static void http_error(char *err, size_t errlen, const char *method, const char *url, long status,
                       const char *body)
{
    const char *msg = kube_status_message(body);
    size_t n = 0;

    if (msg != NULL) {
        kube_fail(err, errlen, "%s %s: HTTP %ld: %s", method, url, status, msg);
        return;
    }
    while (body != NULL && is_space(*body))
        body++;
    while (body != NULL && body[n] != '\0' && body[n] != '\n' && body[n] != '\r' && n < 200)
        n++;
    if (n == 0)
        kube_fail(err, errlen, "%s %s: HTTP %ld", method, url, status);
    else
        kube_fail(err, errlen, "%s %s: HTTP %ld: %.*s", method, url, status, (int)n, body);
}

/* Formats a curl failure: its generic text, then its detailed one when there is. */
static void transport_error(char *err, size_t errlen, const char *method, const char *url,
                            CURLcode cc, const char *detail)
{
    if (detail != NULL && detail[0] != '\0')
        kube_fail(err, errlen, "%s %s: %s (%s)", method, url, curl_easy_strerror(cc), detail);
    else
        kube_fail(err, errlen, "%s %s: %s", method, url, curl_easy_strerror(cc));
}

static char *join_url(const struct kube *k, const char *path)
{
    size_t a = strlen(k->cfg.server), b = strlen(path);
    char *s = malloc(a + b + 1);

    if (s == NULL)
        return NULL;
    memcpy(s, k->cfg.server, a);
    memcpy(s + a, path, b + 1);
    return s;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* True when s can go into an HTTP header: no control characters (CR, LF...). */
static bool header_safe(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return false;
    return true;
}

/* Reads the token file into k->file_token (trimmed). Returns 0 or -1 with errno
 * (EINVAL when the token holds control characters). */
static int read_token_file(struct kube *k)
{
    struct buf b = {.max = MAX_TOKEN};
    struct stat st;
    char chunk[4096];
    size_t start = 0;
    ssize_t n;
    int fd, saved = 0, rc = -1;

    fd = open(k->cfg.token_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0) {
        saved = errno;
        goto out;
    }
    for (;;) {
        n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            saved = errno;
            goto out;
        }
        if (n == 0)
            break;
        if (buf_append(&b, chunk, (size_t)n) < 0) {
            saved = b.over ? EFBIG : ENOMEM;
            goto out;
        }
    }
    if (buf_append(&b, "", 0) < 0) {
        saved = ENOMEM;
        goto out;
    }
    while (b.len > 0 && is_space(b.data[b.len - 1]))
        b.data[--b.len] = '\0';
    while (start < b.len && is_space(b.data[start]))
        start++;
    memmove(b.data, b.data + start, b.len - start + 1);
    if (!header_safe(b.data)) {
        saved = EINVAL;
        goto out;
    }
    if (k->file_token != NULL)
        explicit_bzero(k->file_token, strlen(k->file_token));
    free(k->file_token);
    k->file_token = b.data;
    b.data = NULL;
    k->token_st = st;
    rc = 0;
out:
    free(b.data);
    close(fd);
    if (rc < 0)
        errno = saved;
    return rc;
}

/* Sets *token to the bearer token to send now (NULL for none), re-reading the
 * token file when it changed. A failed re-read keeps the last good token. */
static int current_token(struct kube *k, const char **token, char *err, size_t errlen)
{
    struct stat st;

    *token = k->cfg.token;
    if (k->cfg.token_file == NULL)
        return 0;
    bool changed =
        k->file_token == NULL || stat(k->cfg.token_file, &st) < 0 || !same_file(&st, &k->token_st);
    if (changed && read_token_file(k) < 0 && k->file_token == NULL)
        return kube_fail(err, errlen, "token file `%s': %s", k->cfg.token_file, strerror(errno));
    *token = k->file_token;
    if (*token != NULL && (*token)[0] == '\0')
        *token = NULL;
    return 0;
}

/* Appends "name: value" to *h; false when out of memory (*h is kept). */
static bool add_header(struct curl_slist **h, const char *name, const char *value)
{
    size_t a = strlen(name), b = strlen(value);
    struct curl_slist *t = NULL;
    char *line = malloc(a + 2 + b + 1);

    if (line == NULL)
        return false;
    memcpy(line, name, a);
    memcpy(line + a, ": ", 2);
    memcpy(line + a + 2, value, b + 1);
    t = curl_slist_append(*h, line);
    /* curl copied it; the copy we made may hold the token. */
    explicit_bzero(line, a + 2 + b);
    free(line);
    if (t == NULL)
        return false;
    *h = t;
    return true;
}

/* Builds the request headers; NULL when out of memory. */
static struct curl_slist *make_headers(const char *token, const char *content_type, bool has_body)
{
    struct curl_slist *h = NULL;
    char *bearer = NULL;
    bool ok;

    /* "Expect:" with no value: no 100-continue round trip before large bodies. */
    ok = add_header(&h, "Accept", "application/json") && add_header(&h, "Expect", "");
    if (ok && has_body)
        ok = add_header(&h, "Content-Type", content_type ? content_type : "application/json");
    if (ok && token != NULL) {
        bearer = malloc(strlen("Bearer ") + strlen(token) + 1);
        ok = bearer != NULL;
        if (ok) {
            memcpy(bearer, "Bearer ", 7);
            memcpy(bearer + 7, token, strlen(token) + 1);
            ok = add_header(&h, "Authorization", bearer);
            explicit_bzero(bearer, strlen(bearer));
        }
        free(bearer);
    }
    if (!ok) {
        curl_slist_free_all(h);
        return NULL;
    }
    return h;
}

/* Sets what every transfer shares: URL, headers, timeouts, keepalive and TLS. */
static int setup_easy(struct kube *k, CURL *e, const char *url, struct curl_slist *headers,
                      char *errbuf)
{
    const struct kube_config *c = &k->cfg;
    struct curl_blob blob = {.flags = CURL_BLOB_COPY};
    bool ok = true;

    ok = ok && curl_easy_setopt(e, CURLOPT_URL, url) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500
    ok = ok && curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
#else
    ok = ok && curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) ==
                   CURLE_OK;
#endif
    ok = ok && curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S) == CURLE_OK;
    ok = ok &&
         curl_easy_setopt(e, CURLOPT_USERAGENT, "k8s-adapter/" K8S_ADAPTER_VERSION) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") == CURLE_OK;
    /* HTTP/1.1 only, also over TLS (where libcurl would offer h2): each watch
     * has a connection of its own, so a stalled connection stalls one stream
     * and TCP keepalive finds it, and what runs is what the tests run. */
    ok = ok && curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, KEEPIDLE_S) == CURLE_OK;
    ok = ok && curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, KEEPINTVL_S) == CURLE_OK;
    if (c->ca_pem != NULL) {
        /* Trust only the cluster's CA: drop the system bundle and directory. */
        blob.data = c->ca_pem;
        blob.len = strlen(c->ca_pem);
        ok = ok && curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &blob) == CURLE_OK;
        ok = ok && curl_easy_setopt(e, CURLOPT_CAINFO, (char *)NULL) == CURLE_OK;
        ok = ok && curl_easy_setopt(e, CURLOPT_CAPATH, (char *)NULL) == CURLE_OK;
    } else if (c->ca_file != NULL) {
        ok = ok && curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file) == CURLE_OK;
        ok = ok && curl_easy_setopt(e, CURLOPT_CAPATH, (char *)NULL) == CURLE_OK;
    }
    if (c->cert_pem != NULL) {
        blob.data = c->cert_pem;
        blob.len = strlen(c->cert_pem);
        ok = ok && curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &blob) == CURLE_OK;
        ok = ok && curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM") == CURLE_OK;
    } else if (c->cert_file != NULL) {
        ok = ok && curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file) == CURLE_OK;
        ok = ok && curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM") == CURLE_OK;
    }
    if (c->key_pem != NULL) {
        blob.data = c->key_pem;
        blob.len = strlen(c->key_pem);
        ok = ok && curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &blob) == CURLE_OK;
        ok = ok && curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM") == CURLE_OK;
    } else if (c->key_file != NULL) {
        ok = ok && curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file) == CURLE_OK;
        ok = ok && curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM") == CURLE_OK;
    }
    if (c->insecure) {
        ok = ok && curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L) == CURLE_OK;
        ok = ok && curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L) == CURLE_OK;
    }
    return ok ? 0 : -1;
}

struct kube *kube_new(const struct kube_config *cfg, char *err, size_t errlen)
{
    struct kube *k = NULL;
    const char *token;
    bool global = false;

    if (cfg == NULL || cfg->server == NULL) {
        kube_fail(err, errlen, "no API server configured");
        goto fail;
    }
    if (strncmp(cfg->server, "https://", 8) != 0 && strncmp(cfg->server, "http://", 7) != 0) {
        kube_fail(err, errlen, "server `%s' is not an http:// or https:// URL", cfg->server);
        goto fail;
    }
    if (cfg->token != NULL && !header_safe(cfg->token)) {
        kube_fail(err, errlen, "the token contains control characters");
        goto fail;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        kube_fail(err, errlen, "cannot initialise libcurl");
        goto fail;
    }
    global = true;
    k = calloc(1, sizeof *k);
    if (k == NULL || kube_config_copy(&k->cfg, cfg) < 0) {
        kube_fail(err, errlen, "out of memory");
        goto fail;
    }
    k->easy = curl_easy_init();
    k->multi = curl_multi_init();
    if (k->easy == NULL || k->multi == NULL) {
        kube_fail(err, errlen, "cannot create curl handles");
        goto fail;
    }
    if (current_token(k, &token, err, errlen) < 0)
        goto fail;
    return k;
fail:
    if (k != NULL) {
        curl_multi_cleanup(k->multi);
        curl_easy_cleanup(k->easy);
        kube_config_free(&k->cfg);
        free(k);
    }
    if (global)
        curl_global_cleanup();
    return NULL;
}

/* Collects a request's response body up to MAX_BODY. */
static size_t body_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct buf *b = userdata;
    size_t n = size * nmemb;

    return buf_append(b, ptr, n) < 0 ? 0 : n;
}

/* Sets the method and the body of a request. */
static int set_method(CURL *e, const char *method, const char *body)
{
    bool ok = true;

    if (strcmp(method, "GET") == 0 && body == NULL)
        return curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK ? 0 : -1;
    if (strcmp(method, "HEAD") == 0)
        ok = curl_easy_setopt(e, CURLOPT_NOBODY, 1L) == CURLE_OK;
    else
        ok = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method) == CURLE_OK;
    if (body == NULL &&
        (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0))
        body = "";
    if (body != NULL) {
        ok = ok && curl_easy_setopt(e, CURLOPT_POSTFIELDS, body) == CURLE_OK;
        ok = ok &&
             curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body)) == CURLE_OK;
    }
    return ok ? 0 : -1;
}

int kube_request(struct kube *k, const char *method, const char *path_and_query,
                 const char *content_type, const char *body, char **resp_body, char *err,
                 size_t errlen)
{
    struct buf b = {.max = MAX_BODY};
    struct curl_slist *headers = NULL;
    char errbuf[CURL_ERROR_SIZE] = "", msg[512];
    const char *token;
    char *url = NULL;
    long status = 0;
    bool ok = true;
    CURLcode cc;
    int rc = -1;

    if (resp_body != NULL)
        *resp_body = NULL;
    if (errlen > 0)
        err[0] = '\0';
    url = join_url(k, path_and_query);
    if (url == NULL) {
        kube_fail(err, errlen, "%s %s: out of memory", method, path_and_query);
        goto out;
    }
    if (current_token(k, &token, msg, sizeof msg) < 0) {
        kube_fail(err, errlen, "%s %s: %s", method, url, msg);
        goto out;
    }
    headers = make_headers(token, content_type, body != NULL);
    if (headers == NULL) {
        kube_fail(err, errlen, "%s %s: out of memory", method, url);
        goto out;
    }
    curl_easy_reset(k->easy);
    ok = setup_easy(k, k->easy, url, headers, errbuf) == 0 &&
         set_method(k->easy, method, body) == 0 &&
         curl_easy_setopt(k->easy, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S) == CURLE_OK &&
         curl_easy_setopt(k->easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)MAX_BODY) == CURLE_OK &&
         curl_easy_setopt(k->easy, CURLOPT_WRITEFUNCTION, body_write) == CURLE_OK &&
         curl_easy_setopt(k->easy, CURLOPT_WRITEDATA, &b) == CURLE_OK;
    if (!ok) {
        kube_fail(err, errlen, "%s %s: cannot set up the transfer", method, url);
        goto out;
    }
    cc = curl_easy_perform(k->easy);
    if (cc != CURLE_OK) {
        if (b.over || cc == CURLE_FILESIZE_EXCEEDED)
            kube_fail(err, errlen, "%s %s: response body exceeds 64 MiB", method, url);
        else if (b.oom)
            kube_fail(err, errlen, "%s %s: out of memory", method, url);
        else
            transport_error(err, errlen, method, url, cc, errbuf);
        goto out;
    }
    curl_easy_getinfo(k->easy, CURLINFO_RESPONSE_CODE, &status);
    if (buf_append(&b, "", 0) < 0) {
        kube_fail(err, errlen, "%s %s: out of memory", method, url);
        goto out;
    }
    if (status >= 400)
        http_error(err, errlen, method, url, status, b.data);
    if (resp_body != NULL) {
        *resp_body = b.data;
        b.data = NULL;
    }
    rc = (int)status;
out:
    if (k->observe != NULL)
        k->observe(k->observe_ctx, method, path_and_query, false, rc);
    /* curl keeps a pointer to the header list: clear it before freeing the list. */
    curl_easy_setopt(k->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_slist_free_all(headers);
    free(b.data);
    free(url);
    return rc;
}

/* ---- watches ---- */

static void watch_detach(struct kube_watch *w)
{
    if (w->in_multi) {
        curl_multi_remove_handle(w->k->multi, w->easy);
        w->in_multi = false;
    }
}

/* Tells the observer, once, how w ended: its status, or -1 without one. */
static void watch_observe(struct kube_watch *w)
{
    if (w->observed || w->k->observe == NULL)
        return;
    w->observed = true;
    w->k->observe(w->k->observe_ctx, "GET", w->path != NULL ? w->path : "", true,
                  w->status > 0 ? (int)w->status : -1);
}

static void watch_free(struct kube_watch *w)
{
    struct kube *k = w->k;

    watch_observe(w); /* closed by us, or it never started */
    watch_detach(w);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        k->head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        k->tail = w->prev;
    curl_easy_cleanup(w->easy);
    curl_slist_free_all(w->headers);
    free(w->in.data);
    free(w->url);
    free(w->path);
    free(w);
}

static bool is_2xx(long status)
{
    return status >= 200 && status <= 299;
}

/* Ends w: no callback after this one. The sweep of kube_run frees it. */
static void watch_finish(struct kube_watch *w, int status, const char *err)
{
    curl_off_t ra = 0;
    if (w->easy != NULL && status > 0 && !is_2xx(status) &&
        curl_easy_getinfo(w->easy, CURLINFO_RETRY_AFTER, &ra) != CURLE_OK)
        ra = 0;
    struct kube *k = w->k;
    watch_detach(w);
    w->done = true;
    k->retry_after = ra > 0 ? (long)(ra < 3600 ? ra : 3600) : 0;
    w->ops.closed(w->ctx, status, err);
    k->retry_after = 0;
}


/* Receives stream bytes. It only buffers: callbacks run from kube_run, outside
 * curl, so that they may open and close watches. */
static size_t watch_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct kube_watch *w = userdata;
    size_t n = size * nmemb, partial;
    const char *nl;

    if (w->status == 0)
        curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &w->status);
    if (!is_2xx(w->status)) {
        /* An error response: keep the start of its Status body for the message. */
        size_t room = w->in.len < MAX_ERROR_BODY ? MAX_ERROR_BODY - w->in.len : 0;

        if (buf_append(&w->in, ptr, n < room ? n : room) < 0) {
            snprintf(w->reason, sizeof w->reason, "out of memory");
            return 0;
        }
        return n;
    }
    nl = memrchr(ptr, '\n', n);
    partial = nl != NULL ? (size_t)(ptr + n - nl - 1) : w->partial + n;
    if (partial > MAX_LINE) {
        snprintf(w->reason, sizeof w->reason, "watch line exceeds 16 MiB");
        return 0;
    }
    if (buf_append(&w->in, ptr, n) < 0) {
        snprintf(w->reason, sizeof w->reason, "out of memory");
        return 0;
    }
    w->partial = partial;
    return n;
}

/* Delivers one line of the stream, or ends the watch when it is not an event. */
static void watch_line(struct kube_watch *w, const char *line, size_t len)
{
    const char *end = NULL;
    cJSON *ev, *type, *obj;
    char msg[512];
    size_t i = 0;

    while (i < len && is_space(line[i]))
        i++;
    if (i == len)
        return;
    ev = cJSON_ParseWithLengthOpts(line, len, &end, false);
    while (ev != NULL && end != NULL && end < line + len && is_space(*end))
        end++;
    if (ev != NULL && end != line + len) {
        cJSON_Delete(ev);
        ev = NULL;
    }
    type = cJSON_IsObject(ev) ? cJSON_GetObjectItemCaseSensitive(ev, "type") : NULL;
    obj = cJSON_IsObject(ev) ? cJSON_GetObjectItemCaseSensitive(ev, "object") : NULL;
    if (cJSON_IsString(type) && type->valuestring != NULL && cJSON_IsObject(obj)) {
        w->ops.event(w->ctx, type->valuestring, obj);
    } else {
        snprintf(msg, sizeof msg, "GET %s: malformed watch line `%.*s'%s", w->url,
                 (int)(len - i < QUOTE_MAX ? len - i : QUOTE_MAX), line + i,
                 len - i > QUOTE_MAX ? "..." : "");
        watch_finish(w, (int)w->status, msg);
    }
    cJSON_Delete(ev);
}

/* Delivers the complete lines buffered for w, keeping the partial last one. */
static void watch_dispatch(struct kube_watch *w)
{
    size_t off = 0;

    while (!w->done && off < w->in.len) {
        char *line = w->in.data + off;
        char *nl = memchr(line, '\n', w->in.len - off);

        if (nl == NULL)
            break;
        off += (size_t)(nl - line) + 1;
        watch_line(w, line, (size_t)(nl - line));
    }
    if (w->done || off == 0)
        return;
    memmove(w->in.data, w->in.data + off, w->in.len - off);
    w->in.len -= off;
    w->in.data[w->in.len] = '\0';
}

/* Handles the end of w's transfer as curl reported it. */
static void watch_ended(struct kube_watch *w, CURLcode cc)
{
    char msg[1024];
    long status = 0;

    curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &status);
    if (w->status == 0)
        w->status = status;
    watch_observe(w);
    /* Events that arrived before the end are real: deliver them first. */
    if (is_2xx(status)) {
        watch_dispatch(w);
        if (w->done)
            return;
    }
    if (cc != CURLE_OK) {
        if (w->reason[0] != '\0')
            snprintf(msg, sizeof msg, "GET %s: %s", w->url, w->reason);
        else
            transport_error(msg, sizeof msg, "GET", w->url, cc, w->errbuf);
        watch_finish(w, status > 0 ? (int)status : -1, msg);
        return;
    }
    if (!is_2xx(status)) {
        http_error(msg, sizeof msg, "GET", w->url, status, w->in.data);
        watch_finish(w, status > 0 ? (int)status : -1, msg);
        return;
    }
    /* A last line without its '\n'. */
    if (w->in.len > 0) {
        watch_line(w, w->in.data, w->in.len);
        if (w->done)
            return;
    }
    watch_finish(w, (int)status, NULL);
}

struct kube_watch *kube_watch_open(struct kube *k, const char *path_and_query,
                                   const struct kube_watch_ops *ops, void *ctx)
{
    struct kube_watch *w = calloc(1, sizeof *w);
    const char *token;
    char msg[256];
    bool ok;

    if (w == NULL)
        return NULL;
    w->k = k;
    w->ops = *ops;
    w->ctx = ctx;
    w->in.max = SIZE_MAX;
    w->prev = k->tail;
    if (k->tail != NULL)
        k->tail->next = w;
    else
        k->head = w;
    k->tail = w;
    w->url = join_url(k, path_and_query);
    w->path = strdup(path_and_query);
    w->easy = curl_easy_init();
    if (w->url == NULL || w->path == NULL || w->easy == NULL)
        goto oom;
    if (current_token(k, &token, msg, sizeof msg) < 0) {
        snprintf(w->reason, sizeof w->reason, "GET %s: %s", w->url, msg);
        w->start_failed = true;
        return w;
    }
    w->headers = make_headers(token, NULL, false);
    if (w->headers == NULL)
        goto oom;
    ok = setup_easy(k, w->easy, w->url, w->headers, w->errbuf) == 0 &&
         curl_easy_setopt(w->easy, CURLOPT_HTTPGET, 1L) == CURLE_OK &&
         curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, watch_write) == CURLE_OK &&
         curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w) == CURLE_OK &&
         curl_easy_setopt(w->easy, CURLOPT_PRIVATE, w) == CURLE_OK;
    if (!ok || curl_multi_add_handle(k->multi, w->easy) != CURLM_OK) {
        snprintf(w->reason, sizeof w->reason, "GET %s: cannot start the transfer", w->url);
        w->start_failed = true;
        return w;
    }
    w->in_multi = true;
    return w;
oom:
    watch_free(w);
    return NULL;
}

void kube_watch_close(struct kube_watch *w)
{
    if (w == NULL || w->done)
        return;
    watch_detach(w);
    w->done = true;
    if (!w->k->running)
        watch_free(w);
}

void kube_set_observer(struct kube *k, kube_observer fn, void *ctx)
{
    k->observe = fn;
    k->observe_ctx = ctx;
}

int kube_run(struct kube *k, int timeout_ms)
{
    struct kube_watch *w, *next;
    CURLMcode mc;
    int running = 0, open = 0;

    if (k->running)
        return -1;
    k->running = true;
    for (w = k->head; w != NULL; w = w->next)
        if (w->start_failed && !w->done)
            timeout_ms = 0;
    mc = curl_multi_poll(k->multi, NULL, 0, timeout_ms < 0 ? 0 : timeout_ms, NULL);
    if (mc == CURLM_OK)
        mc = curl_multi_perform(k->multi, &running);
    /* Lines first, so that a stream's events precede its end. Watches opened by
     * callbacks join the list's tail and are harmlessly visited too. */
    for (w = k->head; w != NULL; w = w->next)
        if (!w->done && w->in_multi && is_2xx(w->status))
            watch_dispatch(w);
    for (;;) {
        int left;
        CURLMsg *m = curl_multi_info_read(k->multi, &left);
        char *priv = NULL;
        CURLcode cc;

        if (m == NULL)
            break;
        if (m->msg != CURLMSG_DONE)
            continue;
        cc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        w = (struct kube_watch *)priv;
        if (w != NULL && !w->done)
            watch_ended(w, cc);
    }
    for (w = k->head; w != NULL; w = w->next)
        if (w->start_failed && !w->done)
            watch_finish(w, -1, w->reason);
    for (w = k->head; w != NULL; w = next) {
        next = w->next;
        if (w->done)
            watch_free(w);
        else
            open++;
    }
    k->running = false;
    return mc == CURLM_OK ? open : -1;
}

void kube_wakeup(struct kube *k)
{
    curl_multi_wakeup(k->multi);
}

void kube_free(struct kube *k)
{
    if (k == NULL)
        return;
    while (k->head != NULL)
        watch_free(k->head);
    curl_multi_cleanup(k->multi);
    curl_easy_cleanup(k->easy);
    kube_config_free(&k->cfg);
    if (k->file_token != NULL)
        explicit_bzero(k->file_token, strlen(k->file_token));
    free(k->file_token);
    free(k);
    curl_global_cleanup();
}

long kube_retry_after(const struct kube *k)
{
    return k->retry_after;
}
