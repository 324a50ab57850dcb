/* Prometheus text exposition and its HTTP endpoint (libmicrohttpd). */
#include "ipam/metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- text --------------------------------------------------------------- */

void ipam_mbuf_printf(struct ipam_mbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

void ipam_mbuf_label(struct ipam_mbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            ipam_mbuf_printf(b, "\\\\");
        else if (*s == '"')
            ipam_mbuf_printf(b, "\\\"");
        else if (*s == '\n')
            ipam_mbuf_printf(b, "\\n");
        else
            ipam_mbuf_printf(b, "%c", *s);
    }
}

void ipam_mbuf_free(struct ipam_mbuf *b)
{
    free(b->p);
    *b = (struct ipam_mbuf){0};
}

void ipam_metric_head(struct ipam_mbuf *b, const char *name, const char *type, const char *help)
{
    ipam_mbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

const double ipam_latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                      5,      10};
const size_t ipam_latency_nbounds = sizeof(ipam_latency_bounds) / sizeof(double);
const double ipam_size_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
const size_t ipam_size_nbounds = sizeof(ipam_size_bounds) / sizeof(double);

void ipam_hist_init(struct ipam_hist *h, const double *bounds, size_t nbounds)
{
    *h = (struct ipam_hist){.bounds = bounds,
                            .nbounds = nbounds < IPAM_HIST_MAX_BUCKETS ? nbounds
                                                                       : IPAM_HIST_MAX_BUCKETS - 1};
}

void ipam_hist_observe(struct ipam_hist *h, double v)
{
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->counts[i]++; /* i == nbounds: only +Inf */
    h->count++;
    h->sum += v;
}

void ipam_hist_write(struct ipam_mbuf *b, const char *name, const char *labels,
                     const struct ipam_hist *h)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (size_t i = 0; i < h->nbounds; i++) {
        cum += h->counts[i];
        ipam_mbuf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i],
                         (unsigned long long)cum);
    }
    ipam_mbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                     (unsigned long long)h->count);
    ipam_mbuf_printf(b, "%s_sum%s%s%s %.9g\n", name, labels[0] ? "{" : "", labels,
                     labels[0] ? "}" : "", h->sum);
    ipam_mbuf_printf(b, "%s_count%s%s%s %llu\n", name, labels[0] ? "{" : "", labels,
                     labels[0] ? "}" : "", (unsigned long long)h->count);
}

/* ---- process metrics ---------------------------------------------------- */

static size_t count_fds(void)
{
    size_t n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n ? n - 1 : 0; /* the directory stream's own */
}

void ipam_metrics_process(struct ipam_mbuf *b)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long utime = 0, stime = 0, vsize = 0;
    unsigned long long start = 0;
    long rss = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        /* The command name may hold spaces and parentheses: skip to its end. */
        char *p = strrchr(buf, ')');
        if (!p || sscanf(p + 2,
                         "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d "
                         "%*d %*d %llu %lu %ld",
                         &utime, &stime, &start, &vsize, &rss) != 5)
            utime = stime = vsize = 0, start = 0, rss = 0;
    }
    double boot = 0;
    f = fopen("/proc/stat", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "btime %lf", &boot) == 1)
                break;
        fclose(f);
    }
    struct rlimit rl;
    double maxfds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (double)rl.rlim_cur : 0;

    ipam_metric_head(b, "process_cpu_seconds_total", "counter",
                     "Total user and system CPU time spent in seconds.");
    ipam_mbuf_printf(b, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / tick);
    ipam_metric_head(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    ipam_mbuf_printf(b, "process_resident_memory_bytes %ld\n", rss * page);
    ipam_metric_head(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    ipam_mbuf_printf(b, "process_virtual_memory_bytes %lu\n", vsize);
    ipam_metric_head(b, "process_open_fds", "gauge", "Number of open file descriptors.");
    ipam_mbuf_printf(b, "process_open_fds %zu\n", count_fds());
    ipam_metric_head(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    ipam_mbuf_printf(b, "process_max_fds %.0f\n", maxfds);
    ipam_metric_head(b, "process_start_time_seconds", "gauge",
                     "Start time of the process since unix epoch in seconds.");
    ipam_mbuf_printf(b, "process_start_time_seconds %.2f\n", boot + (double)start / tick);
}

/* ---- HTTP --------------------------------------------------------------- */

struct ipam_metrics_server {
    struct MHD_Daemon *d;
    int fd;
    ipam_metrics_render fn;
    void *ctx;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type,
                             const char *allow, char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **state)
{
    struct ipam_metrics_server *m = cls;
    static const char text[] = "text/plain; charset=utf-8";
    (void)version;
    (void)upload;
    /* The first call only announces the request; answer on the second,
     * once any body (ignored) has been read. */
    if (*state == NULL) {
        *state = m;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/metrics") != 0) {
        static char nf[] = "not found: metrics are at /metrics\n";
        return reply(c, MHD_HTTP_NOT_FOUND, text, NULL, nf, sizeof(nf) - 1,
                     MHD_RESPMEM_PERSISTENT);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static char na[] = "method not allowed: use GET\n";
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, "GET, HEAD", na, sizeof(na) - 1,
                     MHD_RESPMEM_PERSISTENT);
    }
    struct ipam_mbuf b = {0};
    m->fn(m->ctx, &b);
    if (b.failed || !b.p) {
        static char oom[] = "out of memory rendering the metrics\n";
        ipam_mbuf_free(&b);
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text, NULL, oom, sizeof(oom) - 1,
                     MHD_RESPMEM_PERSISTENT);
    }
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", NULL, b.p, b.len,
                 MHD_RESPMEM_MUST_FREE);
}

/* Splits "host:port" or "[v6]:port" and binds a listening socket. */
static int bind_addr(const char *addr, char *bound, size_t bound_len, char *err, size_t errlen)
{
    char host[256];
    const char *port;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof(host)) {
            snprintf(err, errlen, "metrics address `%s' is not host:port or [v6]:port", addr);
            return -1;
        }
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || strchr(addr, ':') != colon || (size_t)(colon - addr) >= sizeof(host)) {
            snprintf(err, errlen, "metrics address `%s' is not host:port or [v6]:port", addr);
            return -1;
        }
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        port = colon + 1;
    }
    char *end;
    errno = 0;
    long pn = strtol(port, &end, 10);
    if (!*port || *end || errno || pn < 0 || pn > 65535 || port[0] == '+' || port[0] == '-') {
        snprintf(err, errlen, "metrics address `%s': port `%s' is not 0 to 65535", addr, port);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "metrics address `%s': %s", addr, gai_strerror(rc));
        return -1;
    }
    /* The IPv6 wildcard (`[::]:P', or an empty host, which prefers it)
     * takes IPv4 connections too, as operators expect of "all addresses";
     * a specific address takes its own family only. Without IPv6 on the
     * host, an empty host falls back to 0.0.0.0. */
    int fd = -1, saved = 0;
    for (int pass = host[0] ? 2 : 0; pass <= (host[0] ? 2 : 1) && fd < 0; pass++) {
        /* IPv4 alone only where IPv6 is missing, never because its port is taken. */
        if (pass == 1 && saved && saved != EAFNOSUPPORT && saved != EADDRNOTAVAIL)
            break;
        for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
            /* pass 0: IPv6 only, pass 1: the others, pass 2: in order */
            if (pass < 2 && (ai->ai_family == AF_INET6) != (pass == 0))
                continue;
            int s = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            int one = 1, v6only = 1;
            if (ai->ai_family == AF_INET6 &&
                IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr))
                v6only = 0;
            if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
                (ai->ai_family == AF_INET6 &&
                 setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) != 0) ||
                bind(s, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s, 64) != 0) {
                if (!saved || errno != EAFNOSUPPORT)
                    saved = errno;
                if (s >= 0)
                    close(s);
                continue;
            }
            fd = s;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot serve metrics on `%s': %s", addr, strerror(saved));
        return -1;
    }
    if (bound && bound_len) {
        struct sockaddr_storage ss = {0};
        socklen_t sl = sizeof(ss);
        char h[INET6_ADDRSTRLEN] = "?", p[8] = "?";
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), p, sizeof(p),
                        NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(bound, bound_len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, p);
    }
    return fd;
}

struct ipam_metrics_server *ipam_metrics_start(const char *addr, ipam_metrics_render fn, void *ctx,
                                               char *bound, size_t bound_len, char *err,
                                               size_t errlen)
{
    struct ipam_metrics_server *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->fn = fn;
    m->ctx = ctx;
    m->fd = bind_addr(addr, bound, bound_len, err, errlen);
    if (m->fd < 0) {
        free(m);
        return NULL;
    }
    /* A scrape is small and quick: a few connections, short timeouts. */
    m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL,
                            on_request, m, MHD_OPTION_LISTEN_SOCKET, m->fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536, MHD_OPTION_END);
    if (!m->d) {
        /* Not closed here: whether MHD already closed the socket it was
         * given depends on where it failed, and closing twice could close
         * somebody else's descriptor. The caller exits on this error. */
        snprintf(err, errlen, "cannot start the metrics server on `%s'", addr);
        free(m);
        return NULL;
    }
    return m;
}

void ipam_metrics_stop(struct ipam_metrics_server *m)
{
    if (!m)
        return;
    MHD_stop_daemon(m->d); /* closes the listening socket it was given */
    free(m);
}
