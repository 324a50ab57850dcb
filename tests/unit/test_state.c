/* Unit tests for the core state: pools, leases, sharing, TTL, commit, reload and events. */
#include "state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fake_store.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_ENTRIES 8

/* A fresh state on an empty fake store. */
static struct state *fresh(size_t ring)
{
    char err[256] = "";
    struct state *s;

    fake_reset();
    s = state_open(&fake_backend, "unused", ring, err, sizeof err);
    CHECK_MSG(s != NULL, "state_open: %s", err);
    return s;
}

static struct state *restart(struct state *s, size_t ring)
{
    char err[256] = "";

    state_close(s);
    s = state_open(&fake_backend, "unused", ring, err, sizeof err);
    CHECK_MSG(s != NULL, "state_open after restart: %s", err);
    return s;
}

static bool commit(struct state *s)
{
    char err[256] = "";

    return CHECK_MSG(st_commit(s, err, sizeof err) == 0, "commit: %s", err);
}

/* ---- requests --------------------------------------------------------- */

/* A comma-separated list split into trimmed entries. */
typedef struct {
    char buf[256];
    char *v[MAX_ENTRIES];
    size_t n;
} entries;

static void split(const char *list, entries *e)
{
    char *p = e->buf;

    snprintf(e->buf, sizeof e->buf, "%s", list ? list : "");
    e->n = 0;
    if (e->buf[0] == '\0')
        return;
    for (;;) {
        char *comma = strchr(p, ',');
        while (*p == ' ')
            p++;
        if (e->n < MAX_ENTRIES)
            e->v[e->n++] = p;
        if (comma == NULL)
            break;
        *comma = '\0';
        p = comma + 1;
    }
}

struct pool_spec {
    const char *name, *space, *blocks;
    bool desc, skip, avoid, share;
};

struct pool_msg {
    Ipam__V1__Pool m;
    entries blocks;
};

static void pool_msg(struct pool_msg *b, const struct pool_spec *p)
{
    Ipam__V1__Pool init = IPAM__V1__POOL__INIT;

    b->m = init;
    split(p->blocks, &b->blocks);
    b->m.name = (char *)p->name;
    b->m.space = (char *)(p->space ? p->space : "");
    b->m.blocks = b->blocks.v;
    b->m.n_blocks = b->blocks.n;
    b->m.search_order = p->desc ? IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC
                                : IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_ASC;
    b->m.skip_end_ips = p->skip;
    b->m.avoid_buggy_ips = p->avoid;
    b->m.allow_share = p->share;
}

static enum ipam_err apply(struct state *s, const struct pool_spec *p, bool *created, bool *changed,
                           struct ipam_status *st)
{
    struct pool_msg b;
    struct pool *out = NULL;

    pool_msg(&b, p);
    return st_apply_pool(s, &b.m, &out, created, changed, st);
}

/* Applies a pool that must be accepted. */
static void must_apply(struct state *s, const struct pool_spec *p)
{
    struct ipam_status st = {0};
    bool created, changed;

    CHECK_MSG(apply(s, p, &created, &changed, &st) == IPAM_OK, "pool `%s': %s", p->name, st.msg);
}

struct alloc_spec {
    const char *owner, *pool, *addrs;
    int family, primary;
    const char *ports;                /* "TCP/80,UDP/53" */
    const char *key, *space, *labels; /* labels: "k=v,k2=v2" */
    uint32_t ttl;
};

struct alloc_msg {
    Ipam__V1__AllocateRequest m;
    entries addrs, ports, labels;
    Ipam__V1__Port port[MAX_ENTRIES];
    Ipam__V1__Port *pp[MAX_ENTRIES];
    Ipam__V1__AllocateRequest__LabelsEntry label[MAX_ENTRIES];
    Ipam__V1__AllocateRequest__LabelsEntry *lp[MAX_ENTRIES];
};

static void alloc_msg(struct alloc_msg *b, const struct alloc_spec *a)
{
    Ipam__V1__AllocateRequest init = IPAM__V1__ALLOCATE_REQUEST__INIT;
    Ipam__V1__Port pinit = IPAM__V1__PORT__INIT;
    Ipam__V1__AllocateRequest__LabelsEntry linit = IPAM__V1__ALLOCATE_REQUEST__LABELS_ENTRY__INIT;

    b->m = init;
    b->m.owner = (char *)a->owner;
    b->m.pool = (char *)(a->pool ? a->pool : "");
    split(a->addrs, &b->addrs);
    b->m.addresses = b->addrs.v;
    b->m.n_addresses = b->addrs.n;
    b->m.family = a->family;
    b->m.primary_family = a->primary;
    b->m.ttl_seconds = a->ttl;
    b->m.sharing_key = (char *)(a->key ? a->key : "");
    b->m.space = (char *)(a->space ? a->space : "");
    split(a->ports, &b->ports);
    for (size_t i = 0; i < b->ports.n; i++) {
        char *slash = strchr(b->ports.v[i], '/');
        b->port[i] = pinit;
        b->port[i].protocol = b->ports.v[i];
        if (slash) {
            *slash = '\0';
            b->port[i].port = (uint32_t)strtoul(slash + 1, NULL, 10);
        }
        b->pp[i] = &b->port[i];
    }
    b->m.ports = b->pp;
    b->m.n_ports = b->ports.n;
    split(a->labels, &b->labels);
    for (size_t i = 0; i < b->labels.n; i++) {
        char *eq = strchr(b->labels.v[i], '=');
        b->label[i] = linit;
        b->label[i].key = b->labels.v[i];
        if (eq) {
            *eq = '\0';
            b->label[i].value = eq + 1;
        }
        b->lp[i] = &b->label[i];
    }
    b->m.labels = b->lp;
    b->m.n_labels = b->labels.n;
}

static enum ipam_err alloc(struct state *s, const struct alloc_spec *a, struct lease **out,
                           bool *created, struct ipam_status *st)
{
    struct alloc_msg b;

    alloc_msg(&b, a);
    *out = NULL;
    return st_allocate(s, &b.m, out, created, st);
}

/* The lease's addresses joined by ','. */
static const char *addrs_text(const struct lease *l, char *buf, size_t len)
{
    char a[IPAM_ADDR_STRLEN];
    size_t pos = 0;

    buf[0] = '\0';
    for (size_t i = 0; l && i < l->naddr && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%s", i ? "," : "",
                                ipam_addr_format(l->addr[i].addr, a));
    return buf;
}

/* Allocates what must be granted; returns the lease's addresses. */
static const char *must_alloc(struct state *s, const struct alloc_spec *a, char *buf, size_t len)
{
    struct ipam_status st = {0};
    struct lease *l;
    bool created;

    buf[0] = '\0';
    if (!CHECK_MSG(alloc(s, a, &l, &created, &st) == IPAM_OK, "allocate `%s': %s", a->owner,
                   st.msg))
        return buf;
    return addrs_text(l, buf, len);
}

static void must_release(struct state *s, const char *owner)
{
    struct ipam_status st = {0};
    struct lease *l = NULL;

    if (CHECK_MSG(st_release(s, owner, &l, &st) == IPAM_OK, "release `%s': %s", owner, st.msg))
        lease_free(l);
}

/* Addresses held in a pool's set, both families. */
static ipam_u128 pool_used(const struct state *s, const char *name)
{
    struct pool_stats ps;
    const struct pool *p = st_pool(s, name);

    if (!p)
        return 0;
    st_pool_stats(p, &ps);
    return ps.used[0] + ps.used[1];
}

static ipam_u128 all_used(const struct state *s)
{
    ipam_u128 n = 0;

    for (const struct pool *p = st_pool_first(s); p; p = st_pool_next(p))
        n += pool_used(s, p->name);
    return n;
}

/* ---- snapshots: everything a restart or a reload must reproduce ------- */

static char *snapshot(const struct state *s)
{
    char *buf = NULL, addrs[128];
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    struct pool_stats ps;

    if (!f)
        return NULL;
    fprintf(f, "revision %llu committed %llu\n", (unsigned long long)st_revision(s),
            (unsigned long long)st_committed(s));
    for (const struct pool *p = st_pool_first(s); p; p = st_pool_next(p)) {
        st_pool_stats(p, &ps);
        fprintf(f, "pool %s space %s blocks %zu order %d flags %d%d%d%d rev %llu/%llu leases %zu",
                p->name, p->space->name, p->nblocks, p->order, p->skip_end_ips, p->avoid_buggy_ips,
                p->allow_share, p->dhcp, (unsigned long long)p->create_revision,
                (unsigned long long)p->revision, p->nleases);
        fprintf(f, " used %llu/%llu total %llu/%llu\n", (unsigned long long)ps.used[0],
                (unsigned long long)ps.used[1], (unsigned long long)ps.total[0],
                (unsigned long long)ps.total[1]);
    }
    for (const struct lease *l = st_lease_after(s, ""); l; l = st_lease_next(l)) {
        fprintf(f,
                "lease %s pool `%s' space %s addrs %s held %d ttl %u exp %lld ctime %lld "
                "rev %llu/%llu key `%s'",
                l->owner, lease_pool_name(l), l->space->name, addrs_text(l, addrs, sizeof addrs), l->held,
                l->ttl, (long long)l->expire_time, (long long)l->create_time,
                (unsigned long long)l->create_revision, (unsigned long long)l->revision,
                lease_sharing_key(l));
        for (size_t i = 0; i < l->nports; i++)
            fprintf(f, " %d/%u", l->ports[i].proto, l->ports[i].port);
        for (size_t i = 0; i < l->nlabels; i++)
            fprintf(f, " %s=%s", l->labels[i].key, l->labels[i].value);
        fprintf(f, "\n");
    }
    fprintf(f, "next expiry %lld\n", (long long)st_next_expiry(s));
    fclose(f);
    return buf;
}

/* Two held leases of one space never have one address unless both share
 * it (both have ports). */
static void check_unique(const struct state *s, const char *scenario)
{
    char b[IPAM_ADDR_STRLEN];
    bool ok = true;

    for (const struct lease *x = st_lease_after(s, ""); x && ok; x = st_lease_next(x))
        for (const struct lease *y = st_lease_next(x); y && ok; y = st_lease_next(y))
            for (size_t i = 0; i < x->naddr && x->held && y->held && x->space == y->space; i++)
                for (size_t j = 0; j < y->naddr; j++)
                    if (x->addr[i].addr == y->addr[j].addr && !(x->nports && y->nports))
                        ok = CHECK_MSG(false, "%s: `%s' and `%s' both hold %s", scenario, x->owner,
                                       y->owner, ipam_addr_format(x->addr[i].addr, b));
    CHECK_MSG(ok, "%s: no address is handed out twice", scenario);
}

/* ---- scripted scenarios ----------------------------------------------- */

/* One step of a scenario: apply a pool, allocate, or release. Allocation
 * steps give the lease's addresses or, on error, a part of the message. */
struct step {
    char op; /* 'P', 'A', 'R' */
    struct pool_spec pool;
    struct alloc_spec req;
    enum ipam_err err;
    const char *want;
    bool again; /* P: unchanged; A: the owner already held this lease */
};

/* The macros stay one line each (clang-format would spread them over four). */
// clang-format off
#define POOL(...) {.op = 'P', .pool = {__VA_ARGS__}}
#define ALLOC(want_, ...) {.op = 'A', .want = want_, .req = {__VA_ARGS__}}
#define AGAIN(want_, ...) {.op = 'A', .want = want_, .again = true, .req = {__VA_ARGS__}}
#define FAIL(err_, want_, ...) {.op = 'A', .err = err_, .want = want_, .req = {__VA_ARGS__}}
#define RELEASE(owner_) {.op = 'R', .req = {.owner = owner_}}
// clang-format on

#define V4 IPAM__V1__FAMILY__FAMILY_IPV4
#define V6 IPAM__V1__FAMILY__FAMILY_IPV6
#define PREFER IPAM__V1__FAMILY__FAMILY_PREFER_DUAL_STACK
#define REQUIRE IPAM__V1__FAMILY__FAMILY_REQUIRE_DUAL_STACK

struct scenario {
    const char *name;
    struct step steps[48];
};

static const struct scenario scenarios[] = {
    {"ascending and descending pools hand out addresses in order, idempotently",
     {
         POOL("asc", .blocks = "192.0.2.10-192.0.2.12"),
         POOL("desc", .space = "other", .blocks = "192.0.2.10-192.0.2.12", .desc = true),
         ALLOC("192.0.2.10", "a1", "asc"),
         ALLOC("192.0.2.11", "a2", "asc"),
         AGAIN("192.0.2.10", "a1", "asc"),
         ALLOC("192.0.2.12", "a3", "asc"),
         FAIL(IPAM_EEXHAUSTED, "pool `asc' has no free IPv4 address", "a4", "asc"),
         FAIL(IPAM_EPRECOND, "already holds 192.0.2.10 from pool `asc'", "a1", "desc"),
         FAIL(IPAM_EPRECOND, "without 192.0.2.12", "a1", "asc", "192.0.2.12"),
         AGAIN("192.0.2.10", "a1", "asc", "192.0.2.10"),
         ALLOC("192.0.2.12", "d1", "desc"),
         ALLOC("192.0.2.11", "d2", "desc"),
         FAIL(IPAM_EEXIST, "address 192.0.2.11 is held by owner `a2'", "b1", "asc", "192.0.2.11"),
         FAIL(IPAM_EINVAL, "address 192.0.2.99 is not in pool `asc'", "b2", "asc", "192.0.2.99"),
         FAIL(IPAM_EINVAL, "invalid address `192.0.2.300'", "b2", "asc", "192.0.2.300"),
         FAIL(IPAM_ENOTFOUND, "pool `nope' not found", "b3", "nope"),
         FAIL(IPAM_EINVAL, "invalid owner `bad owner'", "bad owner", "asc"),
         FAIL(IPAM_EINVAL, "invalid owner `'", "", "asc"),
         FAIL(IPAM_EINVAL, "pool `asc' is in space `default', not `other'", "b4", "asc",
              .space = "other"),
         FAIL(IPAM_EINVAL, "at most two addresses", "b4", "asc",
              "192.0.2.10,192.0.2.11,2001:db8::1"),
         FAIL(IPAM_EINVAL, "label `a' given twice", "b4", "asc", .labels = "a=1,a=2"),
         FAIL(IPAM_EINVAL, "invalid label key `b c'", "b4", "asc", .labels = "b c=1"),
         FAIL(IPAM_EINVAL, "invalid sharing key `x y'", "b4", "asc", .key = "x y"),
         FAIL(IPAM_EINVAL, "more than ten years", "b4", "asc", .ttl = IPAM_MAX_TTL + 1),
         RELEASE("a2"),
         ALLOC("192.0.2.11", "b1", "asc", "192.0.2.11"),
         {.op = 'R', .req = {.owner = "a2"}, .err = IPAM_ENOTFOUND},
     }},
    {"overlapping pools of one space never hand out one address twice; other spaces can",
     {
         POOL("o1", .blocks = "192.0.2.32/30"),
         POOL("o2", .blocks = "192.0.2.34-192.0.2.37"),
         POOL("o3", .space = "blue", .blocks = "192.0.2.32/30"),
         ALLOC("192.0.2.32", "x1", "o1"),
         ALLOC("192.0.2.34", "x2", "o2"),
         ALLOC("192.0.2.33", "x3", "o1"),
         ALLOC("192.0.2.35", "x4", "o1"),
         FAIL(IPAM_EEXHAUSTED, "no free IPv4", "x5", "o1"),
         ALLOC("192.0.2.36", "x6", "o2"),
         ALLOC("192.0.2.37", "x7", "o2"),
         FAIL(IPAM_EEXHAUSTED, "no free IPv4", "x8", "o2"),
         FAIL(IPAM_EEXIST, "held by owner `x2'", "x9", "o1", "192.0.2.34"),
         ALLOC("192.0.2.32", "y1", "o3"),
         ALLOC("192.0.2.34", "y2", "o3", "192.0.2.34"),
     }},
    {"static reservations outside every pool are honoured by later pools",
     {
         POOL("lan", .blocks = "198.51.100.0/29"),
         ALLOC("203.0.113.1", "s1", "", "203.0.113.1"),
         FAIL(IPAM_EINVAL, "address 198.51.100.3 is in pool `lan'", "s2", "", "198.51.100.3"),
         FAIL(IPAM_EINVAL, "needs its addresses", "s3", ""),
         FAIL(IPAM_EINVAL, "a static reservation needs an IPv6 address", "s3", "", "203.0.113.7",
              .family = REQUIRE),
         FAIL(IPAM_EINVAL, "invalid space `a b'", "s3", "", "203.0.113.7", .space = "a b"),
         FAIL(IPAM_EEXIST, "held by owner `s1'", "s4", "", "203.0.113.1"),
         ALLOC("203.0.113.1", "s5", "", "203.0.113.1", .space = "blue"),
         ALLOC("198.51.100.3", "s6", "", "198.51.100.3", .space = "blue"),
         ALLOC("198.51.100.9", "s7", "", "198.51.100.9"),
         AGAIN("203.0.113.1", "s1", "", "203.0.113.1"),
         AGAIN("203.0.113.1", "s1", "", "203.0.113.1", .space = "default"),
         FAIL(IPAM_EPRECOND, "in space `default'", "s1", "", "203.0.113.1", .space = "blue"),
         POOL("later", .blocks = "203.0.113.0/30"),
         ALLOC("203.0.113.0", "l1", "later"),
         ALLOC("203.0.113.2", "l2", "later"),
         ALLOC("203.0.113.3", "l3", "later"),
         FAIL(IPAM_EEXHAUSTED, "no free IPv4", "l4", "later"),
         RELEASE("s1"),
         ALLOC("203.0.113.1", "l4", "later"),
     }},
    {"dual-stack leases follow require/prefer and the primary family",
     {
         POOL("ds", .blocks = "192.0.2.1-192.0.2.2, 2001:db8::1-2001:db8::2"),
         POOL("v4only", .blocks = "198.51.100.1-198.51.100.2"),
         POOL("ds2", .blocks = "192.0.2.10-192.0.2.11, 2001:db8::10/128"),
         ALLOC("192.0.2.1,2001:db8::1", "d1", "ds", .family = REQUIRE),
         ALLOC("2001:db8::2,192.0.2.2", "d2", "ds", .family = REQUIRE, .primary = V6),
         FAIL(IPAM_EEXHAUSTED, "no free", "d3", "ds", .family = PREFER),
         RELEASE("d1"),
         ALLOC("2001:db8::1", "d4", "ds", .family = V6),
         ALLOC("192.0.2.1", "d5", "ds", .family = PREFER),
         FAIL(IPAM_EEXHAUSTED, "no free IPv4", "d6", "ds"),
         FAIL(IPAM_EPRECOND, "pool `v4only' has no IPv6 addresses", "r1", "v4only",
              .family = REQUIRE),
         ALLOC("198.51.100.1", "r2", "v4only"),
         ALLOC("198.51.100.2", "r3", "v4only", .family = PREFER, .primary = V6),
         FAIL(IPAM_EPRECOND, "has no IPv6", "r4", "v4only", .family = V6),
         ALLOC("192.0.2.10,2001:db8::10", "e1", "ds2", .family = REQUIRE),
         FAIL(IPAM_EEXHAUSTED, "no free IPv6", "e2", "ds2", .family = REQUIRE),
         ALLOC("192.0.2.11", "e3", "ds2", .family = PREFER),
         FAIL(IPAM_EINVAL, "not of the requested family", "e4", "ds2", "2001:db8::10",
              .family = V4),
         FAIL(IPAM_EINVAL, "two IPv4 addresses", "e4", "ds2", "192.0.2.10,192.0.2.11"),
         RELEASE("e1"),
         ALLOC("2001:db8::10,192.0.2.10", "e5", "ds2", "192.0.2.10,2001:db8::10", .family = REQUIRE,
               .primary = V6),
     }},
    {"addresses are shared only under the sharing rules",
     {
         POOL("web", .blocks = "10.1.0.1-10.1.0.3", .share = true),
         POOL("web2", .blocks = "10.1.0.1-10.1.0.3", .share = true),
         POOL("plain", .blocks = "10.2.0.1-10.2.0.3"),
         POOL("mixA", .blocks = "10.3.0.1-10.3.0.2", .share = true),
         POOL("mixB", .blocks = "10.3.0.1-10.3.0.2"),
         POOL("web6", .blocks = "2001:db8:6::/127", .share = true),
         ALLOC("10.1.0.1", "s1", "web", .ports = "TCP/80"),
         ALLOC("10.1.0.1", "s2", "web", .ports = "TCP/443"),
         ALLOC("10.1.0.2", "s3", "web", .ports = "TCP/80"),
         ALLOC("10.1.0.1", "s4", "web", .ports = "UDP/80"),
         ALLOC("10.1.0.3", "s5", "web"),
         FAIL(IPAM_EEXIST, "held by owner `s3'", "s6", "web", "10.1.0.2"),
         FAIL(IPAM_EEXIST, "held by owner `s5'", "s6", "web", "10.1.0.3", .ports = "TCP/9"),
         ALLOC("10.1.0.2", "s7", "web2", "10.1.0.2", .ports = "tcp/8080"),
         ALLOC("10.1.0.1", "s8", "web", .ports = "TCP/22,SCTP/80"),
         FAIL(IPAM_EINVAL, "invalid protocol `ICMP'", "s9", "web", .ports = "ICMP/1"),
         FAIL(IPAM_EINVAL, "invalid port 0", "s9", "web", .ports = "TCP/0"),
         ALLOC("10.2.0.1", "p1", "plain", .ports = "TCP/80"),
         ALLOC("10.2.0.2", "p2", "plain", .ports = "TCP/81"),
         FAIL(IPAM_EEXIST, "held by owner `p1'", "p3", "plain", "10.2.0.1", .ports = "TCP/82"),
         ALLOC("10.2.0.3", "k1", "plain", .ports = "TCP/80", .key = "team"),
         ALLOC("10.2.0.3", "k2", "plain", .ports = "TCP/443", .key = "team"),
         /* Both holders refuse; the message names one of them. */
         FAIL(IPAM_EEXIST, "held by owner `k", "k3", "plain", "10.2.0.3", .ports = "TCP/8",
              .key = "other"),
         FAIL(IPAM_EEXIST, "held by owner `k1'", "k4", "plain", "10.2.0.3", .ports = "TCP/80",
              .key = "team"),
         FAIL(IPAM_EEXHAUSTED, "no free IPv4", "k5", "plain", .ports = "TCP/80", .key = "team"),
         ALLOC("2001:db8:6::", "v1", "web6", .ports = "TCP/80"),
         ALLOC("2001:db8:6::", "v2", "web6", .ports = "TCP/81"),
         ALLOC("2001:db8:6::1", "v3", "web6", .ports = "TCP/80"),
         ALLOC("10.3.0.1", "m1", "mixB", .ports = "TCP/1"),
         FAIL(IPAM_EEXIST, "held by owner `m1'", "m2", "mixA", "10.3.0.1", .ports = "TCP/2"),
         ALLOC("10.3.0.2", "m3", "mixA", .ports = "TCP/2"),
         /* An address stays held until its last holder lets it go. */
         RELEASE("s1"),
         FAIL(IPAM_EEXHAUSTED, "no free IPv4", "s10", "web"),
         RELEASE("s2"),
         RELEASE("s4"),
         FAIL(IPAM_EEXHAUSTED, "no free IPv4", "s10", "web"),
         RELEASE("s8"),
         ALLOC("10.1.0.1", "s10", "web"),
         /* Sharing never hands out what the pool avoids: a requested .0
          * is honoured, but not offered to the next sharer. */
         POOL("avsh", .blocks = "10.4.0.0/24", .avoid = true, .share = true),
         ALLOC("10.4.0.0", "a0", "avsh", "10.4.0.0", .ports = "TCP/80"),
         ALLOC("10.4.0.1", "a1", "avsh", .ports = "TCP/443"),
         ALLOC("10.4.0.1", "a2", "avsh", .ports = "TCP/22"),
         POOL("avsh6", .blocks = "10.5.0.254-10.5.1.1", .avoid = true, .share = true, .desc = true),
         ALLOC("10.5.0.255", "b0", "avsh6", "10.5.0.255", .ports = "TCP/80"),
         ALLOC("10.5.1.1", "b1", "avsh6", .ports = "TCP/443"),
     }},
    {"a DHCP pool gives 0.0.0.0 to everyone and holds nothing",
     {
         POOL("dhcp", .blocks = "0.0.0.0/32"),
         POOL("zero", .blocks = "0.0.0.0/30"),
         ALLOC("0.0.0.0", "h1", "dhcp"),
         ALLOC("0.0.0.0", "h2", "dhcp"),
         AGAIN("0.0.0.0", "h1", "dhcp"),
         ALLOC("0.0.0.0", "z1", "zero"),
         ALLOC("0.0.0.0", "h3", "dhcp"),
         ALLOC("0.0.0.1", "z2", "zero"),
     }},
};

static void run_scenario(const struct scenario *sc)
{
    struct state *s = fresh(64);
    char buf[128];

    for (size_t i = 0; i < N(sc->steps) && sc->steps[i].op && s; i++) {
        const struct step *t = &sc->steps[i];
        struct ipam_status st = {0};
        uint64_t rev0 = st_revision(s);
        size_t n0 = st_lease_count(s);
        ipam_u128 used0 = all_used(s);
        struct lease *l = NULL;
        bool created = false, changed = false, existed;
        enum ipam_err e;

        switch (t->op) {
        case 'P':
            existed = st_pool(s, t->pool.name) != NULL;
            e = apply(s, &t->pool, &created, &changed, &st);
            if (!CHECK_MSG(e == t->err, "%s: step %zu: pool `%s': error %d (%s), want %d", sc->name,
                           i, t->pool.name, e, st.msg, t->err))
                break;
            if (e == IPAM_OK)
                CHECK_MSG(created == !existed && changed == !t->again &&
                              st_revision(s) == rev0 + changed,
                          "%s: step %zu: pool `%s': created %d changed %d", sc->name, i,
                          t->pool.name, created, changed);
            break;
        case 'A':
            e = alloc(s, &t->req, &l, &created, &st);
            if (!CHECK_MSG(e == t->err, "%s: step %zu: `%s': error %d (%s), want %d", sc->name, i,
                           t->req.owner, e, st.msg, t->err))
                break;
            if (e == IPAM_OK) {
                CHECK_MSG(strcmp(addrs_text(l, buf, sizeof buf), t->want) == 0,
                          "%s: step %zu: `%s' got %s, want %s", sc->name, i, t->req.owner, buf,
                          t->want);
                CHECK_MSG(created == !t->again && st_revision(s) == rev0 + !t->again &&
                              st_lease_count(s) == n0 + !t->again,
                          "%s: step %zu: `%s': created %d, revision %llu after %llu", sc->name, i,
                          t->req.owner, created, (unsigned long long)st_revision(s),
                          (unsigned long long)rev0);
                CHECK_MSG(l == st_lease(s, t->req.owner), "%s: step %zu: lease pointer", sc->name,
                          i);
            } else {
                CHECK_MSG(strstr(st.msg, t->want) != NULL, "%s: step %zu: message `%s' lacks `%s'",
                          sc->name, i, st.msg, t->want);
                CHECK_MSG(st_revision(s) == rev0 && st_lease_count(s) == n0 && all_used(s) == used0,
                          "%s: step %zu: a refused allocation changed the state", sc->name, i);
            }
            break;
        case 'R':
            e = st_release(s, t->req.owner, &l, &st);
            if (CHECK_MSG(e == t->err, "%s: step %zu: release `%s': %s", sc->name, i, t->req.owner,
                          st.msg) &&
                e == IPAM_OK) {
                CHECK(st_revision(s) == rev0 + 1 && st_lease_count(s) == n0 - 1);
                CHECK(st_lease(s, t->req.owner) == NULL && l != NULL);
                /* The released lease still names its pool, for the reply. */
                CHECK(l == NULL || !l->pool || st_pool(s, l->pool->name) == l->pool);
                lease_free(l);
            }
            break;
        }
    }
    if (!s)
        return;
    check_unique(s, sc->name);

    /* Whatever the scenario built survives a commit and a restart exactly. */
    char *before, *after;
    commit(s);
    before = snapshot(s);
    s = restart(s, 64);
    after = s ? snapshot(s) : NULL;
    CHECK_MSG(before && after && strcmp(before, after) == 0,
              "%s: a restart changed the state:\n--- before\n%s--- after\n%s", sc->name, before,
              after);
    free(before);
    free(after);
    state_close(s);
}

static void test_scenarios(void)
{
    for (size_t i = 0; i < N(scenarios); i++)
        run_scenario(&scenarios[i]);
}

/* The DHCP leases hold nothing, so the other pool's count sees only z1/z2. */
static void test_dhcp_holds_nothing(void)
{
    struct state *s = fresh(16);
    struct pool_stats ps;
    char buf[64];

    if (!s)
        return;
    must_apply(s, &(struct pool_spec){"dhcp", NULL, "0.0.0.0/32"});
    must_apply(s, &(struct pool_spec){"zero", NULL, "0.0.0.0/30"});
    CHECK(st_pool(s, "dhcp")->dhcp && !st_pool(s, "zero")->dhcp);
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"h1", "dhcp"}, buf, sizeof buf), "0.0.0.0");
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"h2", "dhcp"}, buf, sizeof buf), "0.0.0.0");
    CHECK(!st_lease(s, "h1")->held && !st_lease(s, "h2")->held);
    st_pool_stats(st_pool(s, "zero"), &ps);
    CHECK(ps.used[0] == 0 && ps.total[0] == 4);
    st_pool_stats(st_pool(s, "dhcp"), &ps);
    CHECK(ps.used[0] == 0);
    /* Releasing a DHCP lease frees nothing it did not hold. */
    must_release(s, "h1");
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"z1", "zero"}, buf, sizeof buf), "0.0.0.0");
    must_release(s, "h2");
    CHECK(st_lease(s, "z1")->held && pool_used(s, "zero") == 1);
    commit(s);
    s = restart(s, 16);
    if (!s)
        return;
    CHECK_EQ_INT(pool_used(s, "zero"), 1);
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"h3", "dhcp"}, buf, sizeof buf), "0.0.0.0");
    CHECK(!st_lease(s, "h3")->held);
    state_close(s);
}

/* ---- pools ------------------------------------------------------------ */

static void test_apply_pool(void)
{
    struct state *s = fresh(16);
    struct ipam_status st = {0};
    bool created, changed;
    struct pool_spec lan = {"lan", NULL, "192.0.2.0/24", false, true, false, false};

    if (!s)
        return;
    CHECK(apply(s, &lan, &created, &changed, &st) == IPAM_OK && created && changed);
    struct pool *p = st_pool(s, "lan");
    CHECK(p != NULL && p->create_revision == 1 && p->revision == 1 && st_revision(s) == 1);
    CHECK(st_dirty(s) && st_committed(s) == 0);
    CHECK(commit(s) && !st_dirty(s) && st_committed(s) == 1 && fake.rev == 1);

    /* Applying the same pool again changes nothing, not even the revision. */
    CHECK(apply(s, &lan, &created, &changed, &st) == IPAM_OK && !created && !changed);
    CHECK(st_revision(s) == 1 && !st_dirty(s) && st_pool(s, "lan") == p);
    lan.space = "default";
    CHECK(apply(s, &lan, &created, &changed, &st) == IPAM_OK && !created && !changed);

    /* A change keeps the pool object and its create revision. */
    lan.desc = true;
    CHECK(apply(s, &lan, &created, &changed, &st) == IPAM_OK && !created && changed);
    CHECK(st_pool(s, "lan") == p && p->order == IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC);
    CHECK(p->create_revision == 1 && p->revision == 2 && st_revision(s) == 2);

    /* Invalid pools: refused with a message quoting the input; nothing
     * changes. */
    static const struct {
        struct pool_spec pool;
        const char *want[2];
    } bad[] = {
        {{"lan", NULL, "192.0.2.0/24, 10.0.0.0/33"}, {"10.0.0.0/33", "lan"}},
        {{"lan", NULL, "192.0.2.0/24,,192.0.3.0/24"}, {"lan", "lan"}},
        {{"wan", NULL, "banana"}, {"banana", "wan"}},
        {{"wan", NULL, "192.0.2.20-192.0.2.10"}, {"192.0.2.20-192.0.2.10", "wan"}},
        {{"wan", NULL, "192.0.2.1-2001:db8::1"}, {"192.0.2.1-2001:db8::1", "wan"}},
        {{"wan", NULL, "::ffff:0:0/96"}, {"::ffff:0:0/96", "wan"}},
        {{"wan", NULL, ""}, {"has no blocks", "wan"}},
        {{"bad name", NULL, "192.0.2.0/24"}, {"invalid pool name `bad name'", "bad name"}},
        {{"", NULL, "192.0.2.0/24"}, {"invalid pool name", "invalid"}},
        {{"wan", "bad space", "192.0.2.0/24"}, {"invalid space `bad space'", "wan"}},
    };
    for (size_t i = 0; i < N(bad); i++) {
        memset(&st, 0, sizeof st);
        enum ipam_err e = apply(s, &bad[i].pool, &created, &changed, &st);
        CHECK_MSG(e == IPAM_EINVAL, "bad pool %zu: error %d, want IPAM_EINVAL", i, e);
        CHECK_MSG(strstr(st.msg, bad[i].want[0]) && strstr(st.msg, bad[i].want[1]),
                  "bad pool %zu: message `%s' should quote `%s' and `%s'", i, st.msg,
                  bad[i].want[0], bad[i].want[1]);
        CHECK_MSG(st_revision(s) == 2 && st_pool(s, "lan") == p && p->nblocks == 1 &&
                      p->revision == 2 && st_pool(s, "wan") == NULL,
                  "bad pool %zu changed the state", i);
    }

    /* A pool with leases cannot move to another space; an empty one can. */
    char buf[64];
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"o1", "lan"}, buf, sizeof buf), "192.0.2.254");
    lan.space = "blue";
    CHECK(apply(s, &lan, &created, &changed, &st) == IPAM_EPRECOND);
    CHECK(strstr(st.msg, "cannot move to space `blue'") != NULL);
    CHECK(strcmp(p->space->name, "default") == 0);
    must_release(s, "o1");
    CHECK(apply(s, &lan, &created, &changed, &st) == IPAM_OK && changed);
    CHECK(strcmp(p->space->name, "blue") == 0);
    CHECK(commit(s) && fake.rev == st_revision(s));
    state_close(s);
}

static void test_delete_pool(void)
{
    struct state *s = fresh(16);
    struct ipam_status st = {0};
    uint32_t released = 99;
    char buf[64];

    if (!s)
        return;
    must_apply(s, &(struct pool_spec){"full", NULL, "192.0.2.0/30"});
    must_apply(s, &(struct pool_spec){"empty", NULL, "198.51.100.0/30"});
    must_alloc(s, &(struct alloc_spec){"f1", "full"}, buf, sizeof buf);
    must_alloc(s, &(struct alloc_spec){"f2", "full"}, buf, sizeof buf);
    must_alloc(s, &(struct alloc_spec){"other", "", "192.0.2.9"}, buf, sizeof buf);
    CHECK(commit(s));
    uint64_t rev = st_revision(s);

    CHECK(st_delete_pool(s, "nope", false, &released, &st) == IPAM_ENOTFOUND);
    CHECK(st_delete_pool(s, "full", false, &released, &st) == IPAM_EPRECOND);
    CHECK(strstr(st.msg, "pool `full' has 2 leases") != NULL);
    CHECK(st_revision(s) == rev && st_pool(s, "full") && st_lease_count(s) == 3);
    CHECK(st_delete_pool(s, "empty", false, &released, &st) == IPAM_OK && released == 0);
    CHECK(st_pool(s, "empty") == NULL && st_revision(s) == rev + 1);
    CHECK(st_delete_pool(s, "full", true, &released, &st) == IPAM_OK && released == 2);
    /* Two lease deletions and the pool's own. */
    CHECK(st_revision(s) == rev + 4 && st_lease_count(s) == 1 && st_lease(s, "other"));
    CHECK(st_pool(s, "full") == NULL && st_lease(s, "f1") == NULL);
    /* Its addresses are free for the next pool over them. */
    must_apply(s, &(struct pool_spec){"again", NULL, "192.0.2.0/30"});
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"g1", "again"}, buf, sizeof buf), "192.0.2.0");
    CHECK(commit(s));
    s = restart(s, 16);
    if (!s)
        return;
    CHECK(st_pool(s, "full") == NULL && st_pool(s, "empty") == NULL && st_lease_count(s) == 2);
    state_close(s);
}

static void test_pool_stats(void)
{
    static const struct {
        struct pool_spec pool;
        unsigned long long total4, total6;
    } rows[] = {
        {{"p", NULL, "192.0.2.0/24", false, true, false}, 254, 0},
        {{"p", NULL, "192.0.2.0/24", false, false, true}, 254, 0},
        {{"p", NULL, "192.0.2.0/24", false, true, true}, 254, 0},
        {{"p", NULL, "192.0.2.0/24", false, false, false}, 256, 0},
        {{"p", NULL, "192.0.2.0/23", false, true, false}, 510, 0},
        {{"p", NULL, "192.0.2.0/23", false, false, true}, 508, 0},
        {{"p", NULL, "192.0.2.250-192.0.3.5", false, true, true}, 10, 0},
        {{"p", NULL, "192.0.2.0/31", false, true, true}, 1, 0},
        {{"p", NULL, "192.0.2.0/30, 2001:db8::/126", false, true, true}, 2, 4},
        {{"p", NULL, "2001:db8::/120", false, true, true}, 0, 256},
    };

    for (size_t i = 0; i < N(rows); i++) {
        struct state *s = fresh(16);
        struct pool_stats ps;
        if (!s)
            return;
        must_apply(s, &rows[i].pool);
        st_pool_stats(st_pool(s, "p"), &ps);
        CHECK_MSG(ps.total[0] == rows[i].total4 && ps.total[1] == rows[i].total6 &&
                      ps.used[0] == 0 && ps.used[1] == 0,
                  "row %zu: `%s': total %llu/%llu, want %llu/%llu", i, rows[i].pool.blocks,
                  (unsigned long long)ps.total[0], (unsigned long long)ps.total[1], rows[i].total4,
                  rows[i].total6);
        state_close(s);
    }

    /* A /64 counts 2^64, more than 64 bits hold. */
    struct state *s = fresh(16);
    struct pool_stats ps;
    char buf[64];
    if (!s)
        return;
    must_apply(s, &(struct pool_spec){"big", NULL, "2001:db8::/64"});
    st_pool_stats(st_pool(s, "big"), &ps);
    CHECK(ps.total[1] == (ipam_u128)1 << 64 && ps.total[0] == 0);

    /* Used counts every holder of the space inside the pool's set, and an
     * avoiding pool does not count .0/.255 held by someone else. */
    must_apply(s, &(struct pool_spec){"av", NULL, "192.0.2.0/24", false, false, true});
    must_apply(s, &(struct pool_spec){"all", NULL, "192.0.2.0/24"});
    for (int i = 0; i < 3; i++) {
        char owner[8];
        snprintf(owner, sizeof owner, "u%d", i);
        must_alloc(s, &(struct alloc_spec){owner, "av"}, buf, sizeof buf);
    }
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"z", "all"}, buf, sizeof buf), "192.0.2.0");
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"b", "all", "192.0.2.255"}, buf, sizeof buf),
                 "192.0.2.255");
    st_pool_stats(st_pool(s, "av"), &ps);
    CHECK(ps.total[0] == 254 && ps.used[0] == 3);
    st_pool_stats(st_pool(s, "all"), &ps);
    CHECK(ps.total[0] == 256 && ps.used[0] == 5);
    CHECK(st_pool(s, "av")->nleases == 3 && st_pool(s, "all")->nleases == 2);
    state_close(s);
}

/* ---- leases over time ------------------------------------------------- */

static void test_ttl(void)
{
    struct state *s = fresh(16);
    char buf[64];

    if (!s)
        return;
    must_apply(s, &(struct pool_spec){"t", NULL, "192.0.2.1-192.0.2.9"});
    must_alloc(s, &(struct alloc_spec){"t1", "t", .ttl = 100}, buf, sizeof buf);
    must_alloc(s, &(struct alloc_spec){"t2", "t", .ttl = 200}, buf, sizeof buf);
    must_alloc(s, &(struct alloc_spec){"t3", "t"}, buf, sizeof buf);
    struct lease *l1 = st_lease(s, "t1"), *l2 = st_lease(s, "t2"), *l3 = st_lease(s, "t3");
    if (!CHECK(l1 && l2 && l3))
        return;
    int64_t e1 = l1->expire_time, e2 = l2->expire_time;
    CHECK(e1 == l1->create_time + 100 && e2 == l2->create_time + 200 && l3->expire_time == 0);
    CHECK(l1->ttl == 100 && l3->ttl == 0);
    CHECK(st_next_expiry(s) == e1);
    CHECK(commit(s));
    uint64_t rev = st_revision(s);

    CHECK_EQ_INT(st_expire(s, e1 - 1), 0);
    CHECK(st_revision(s) == rev);
    CHECK_EQ_INT(st_expire(s, e1), 1);
    CHECK(st_lease(s, "t1") == NULL && st_lease(s, "t2") && st_lease(s, "t3"));
    CHECK(st_revision(s) == rev + 1 && st_next_expiry(s) == e2);
    /* The expired address is free again. */
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"t4", "t"}, buf, sizeof buf), "192.0.2.1");
    CHECK(commit(s));
    s = restart(s, 16);
    if (!s)
        return;
    CHECK(st_next_expiry(s) == e2);
    CHECK_EQ_INT(st_expire(s, e2 + 1000000), 1);
    CHECK(st_lease(s, "t2") == NULL && st_lease(s, "t3") && st_lease(s, "t4"));
    CHECK(st_next_expiry(s) == 0);
    CHECK_EQ_INT(st_expire(s, INT64_MAX), 0);

    /* A TTL over ten years is refused. */
    struct ipam_status st = {0};
    struct lease *l;
    bool created;
    CHECK(alloc(s, &(struct alloc_spec){"t5", "t", .ttl = IPAM_MAX_TTL + 1}, &l, &created, &st) ==
          IPAM_EINVAL);
    CHECK(strstr(st.msg, "ten years") != NULL);
    state_close(s);
}

static void test_renew(void)
{
    struct state *s = fresh(16);
    struct ipam_status st = {0};
    struct lease *l = NULL;
    char buf[64];

    if (!s)
        return;
    must_apply(s, &(struct pool_spec){"r", NULL, "192.0.2.1-192.0.2.9"});
    must_alloc(s, &(struct alloc_spec){"r1", "r", .ttl = 10}, buf, sizeof buf);
    must_alloc(s, &(struct alloc_spec){"r2", "r"}, buf, sizeof buf);
    uint64_t rev = st_revision(s);

    time_t before = time(NULL);
    CHECK(st_renew(s, "r1", 1000, &l, &st) == IPAM_OK && l == st_lease(s, "r1"));
    time_t after = time(NULL);
    CHECK(l->ttl == 1000 && l->expire_time >= before + 1000 && l->expire_time <= after + 1000);
    CHECK(st_revision(s) == rev + 1 && l->revision == rev + 1 && l->create_revision < rev + 1);
    CHECK(st_next_expiry(s) == l->expire_time);
    /* ttl 0 keeps the lease's own. */
    CHECK(st_renew(s, "r1", 0, &l, &st) == IPAM_OK && l->ttl == 1000);
    CHECK(st_revision(s) == rev + 2);
    /* A lease without expiry has nothing to renew; a ttl gives it one. */
    CHECK(st_renew(s, "r2", 0, &l, &st) == IPAM_OK && l->expire_time == 0);
    CHECK(st_revision(s) == rev + 2);
    CHECK(st_renew(s, "r2", 50, &l, &st) == IPAM_OK && l->ttl == 50 && l->expire_time > 0);
    CHECK(st_next_expiry(s) == l->expire_time);
    CHECK(st_renew(s, "ghost", 10, &l, &st) == IPAM_ENOTFOUND);
    CHECK(strstr(st.msg, "`ghost'") != NULL);
    CHECK(st_renew(s, "r1", IPAM_MAX_TTL + 1, &l, &st) == IPAM_EINVAL);
    CHECK(commit(s));
    char *before_snap = snapshot(s);
    s = restart(s, 16);
    char *after_snap = s ? snapshot(s) : NULL;
    CHECK(before_snap && after_snap && strcmp(before_snap, after_snap) == 0);
    free(before_snap);
    free(after_snap);
    state_close(s);
}

/* ---- durability ------------------------------------------------------- */

static void test_commit_failure(void)
{
    struct state *s = fresh(16);
    char buf[64], err[256] = "";

    if (!s)
        return;
    must_apply(s, &(struct pool_spec){"c", NULL, "192.0.2.1-192.0.2.9"});
    must_alloc(s, &(struct alloc_spec){"c1", "c", .labels = "app=web,tier=front"}, buf, sizeof buf);
    must_alloc(s, &(struct alloc_spec){"c2", "c", .ttl = 60}, buf, sizeof buf);
    CHECK(commit(s));
    char *committed = snapshot(s);
    uint64_t rev = st_revision(s);
    size_t objs = fake_count();

    /* A batch of every kind of change, then a commit that fails. */
    must_alloc(s, &(struct alloc_spec){"c3", "c"}, buf, sizeof buf);
    must_release(s, "c1");
    must_apply(s, &(struct pool_spec){"d", NULL, "198.51.100.0/30"});
    must_apply(s, &(struct pool_spec){"c", NULL, "192.0.2.1-192.0.2.9", true});
    must_alloc(s, &(struct alloc_spec){"d1", "d"}, buf, sizeof buf);
    st_expire(s, INT64_MAX);
    CHECK(st_dirty(s) && st_revision(s) == rev + 6);
    fake.fail_next = true;
    CHECK(st_commit(s, err, sizeof err) == -1);
    CHECK(strstr(err, "injected commit failure") != NULL);

    /* Memory is exactly what the store holds. */
    char *reloaded = snapshot(s);
    CHECK_MSG(committed && reloaded && strcmp(committed, reloaded) == 0,
              "after a failed commit:\n--- committed\n%s--- in memory\n%s", committed, reloaded);
    CHECK(!st_dirty(s) && st_revision(s) == rev && st_committed(s) == rev);
    CHECK(st_lease_count(s) == 2 && st_lease(s, "c1") && st_lease(s, "c2"));
    CHECK(st_lease(s, "c3") == NULL && st_pool(s, "d") == NULL);
    CHECK(st_lease(s, "c1")->nlabels == 2);
    CHECK(fake.rev == rev && fake_count() == objs && fake.failures == 1);
    bool gone = false;
    CHECK(st_event_from(s, rev + 1, &gone) == NULL && !gone);

    /* Work goes on: the next batch commits, from the same revision on. */
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"c3", "c"}, buf, sizeof buf), "192.0.2.3");
    CHECK(st_revision(s) == rev + 1);
    CHECK(commit(s) && fake.rev == rev + 1);
    const struct event *ev = st_event_from(s, rev + 1, &gone);
    CHECK(ev != NULL && ev->revision == rev + 1);
    free(committed);
    free(reloaded);
    state_close(s);
}

static void test_restart(void)
{
    struct state *s = fresh(16);
    char buf[64];

    if (!s)
        return;
    /* The store is exclusive while open. */
    char err[256] = "";
    CHECK(state_open(&fake_backend, "unused", 16, err, sizeof err) == NULL);
    CHECK(strstr(err, "in use") != NULL);

    must_apply(s, &(struct pool_spec){"v4", NULL, "192.0.2.0/24", false, true, true});
    must_apply(s, &(struct pool_spec){"ds", "blue", "198.51.100.0/30, 2001:db8::/126"});
    must_apply(s, &(struct pool_spec){"share", NULL, "203.0.113.0/30", .share = true});
    for (int i = 0; i < 20; i++) {
        char owner[16];
        snprintf(owner, sizeof owner, "k8s/ns/svc-%02d", i);
        must_alloc(s, &(struct alloc_spec){owner, "v4"}, buf, sizeof buf);
    }
    must_alloc(s, &(struct alloc_spec){"ds1", "ds", .family = REQUIRE, .primary = V6}, buf,
               sizeof buf);
    must_alloc(s, &(struct alloc_spec){"st1", "", "10.9.9.9,2001:db8:9::9", .space = "blue"}, buf,
               sizeof buf);
    must_alloc(s, &(struct alloc_spec){"sh1", "share", .ports = "TCP/80", .key = "k"}, buf,
               sizeof buf);
    must_alloc(s, &(struct alloc_spec){"sh2", "share", .ports = "UDP/80", .key = "k"}, buf,
               sizeof buf);
    must_alloc(s, &(struct alloc_spec){"lb", "v4", .labels = "a=1,b=two words", .ttl = 3600}, buf,
               sizeof buf);
    must_release(s, "k8s/ns/svc-03");
    CHECK(commit(s));
    uint64_t rev = st_revision(s);
    char *before = snapshot(s);

    s = restart(s, 16);
    if (!s)
        return;
    char *after = snapshot(s);
    CHECK_MSG(before && after && strcmp(before, after) == 0,
              "a restart changed the state:\n--- before\n%s--- after\n%s", before, after);
    CHECK(st_revision(s) == rev && st_committed(s) == rev && !st_dirty(s));
    CHECK_EQ_INT(st_lease_count(s), 24);
    /* Held addresses stay held: the freed one comes first, then new ones. */
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"n1", "v4"}, buf, sizeof buf), "192.0.2.4");
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"n2", "v4"}, buf, sizeof buf), "192.0.2.22");
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"sh3", "share", .ports = "TCP/443", .key = "k"},
                            buf, sizeof buf),
                 "203.0.113.0");
    struct ipam_status st = {0};
    struct lease *l;
    bool created;
    CHECK(alloc(s, &(struct alloc_spec){"x", "", "2001:db8:9::9", .space = "blue"}, &l, &created,
                &st) == IPAM_EEXIST);
    CHECK(alloc(s, &(struct alloc_spec){"ds1", "ds", .family = REQUIRE}, &l, &created, &st) ==
              IPAM_OK &&
          !created && strcmp(addrs_text(l, buf, sizeof buf), "2001:db8::,198.51.100.0") == 0);
    free(before);
    free(after);
    state_close(s);
}

/* A pool cannot switch to or from DHCP mode under its leases: DHCP leases
 * hold nothing and others hold their address, so a switch would leave leases
 * holding what the mode says they don't (and a restart would disagree with
 * memory). Without leases it can, and a restart sees exactly the same. */
static void restart_compare(struct state **s, const char *what)
{
    char *before = snapshot(*s), *after;

    *s = restart(*s, 16);
    after = *s ? snapshot(*s) : NULL;
    CHECK_MSG(before && after && strcmp(before, after) == 0,
              "%s: a restart changed the state:\n--- before\n%s--- after\n%s", what, before, after);
    free(before);
    free(after);
}

static void test_pool_cannot_switch_dhcp_under_leases(void)
{
    struct state *s = fresh(16);
    struct ipam_status st;
    bool created, changed;
    char buf[64];

    if (!s)
        return;
    /* z1 holds 0.0.0.0 from a plain pool: the pool cannot become DHCP. */
    must_apply(s, &(struct pool_spec){"z", NULL, "0.0.0.0/30"});
    must_apply(s, &(struct pool_spec){"w", NULL, "0.0.0.0/30"});
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"z1", "z"}, buf, sizeof buf), "0.0.0.0");
    uint64_t rev = st_revision(s);
    CHECK(apply(s, &(struct pool_spec){"z", NULL, "0.0.0.0/32"}, &created, &changed, &st) ==
          IPAM_EPRECOND);
    CHECK_MSG(strstr(st.msg, "cannot switch to DHCP mode") != NULL, "message `%s'", st.msg);
    CHECK(!st_pool(s, "z")->dhcp && st_lease(s, "z1")->held && st_revision(s) == rev);
    CHECK(commit(s));
    restart_compare(&s, "plain pool refused DHCP");
    if (!s)
        return;
    CHECK_EQ_STR(must_alloc(s, &(struct alloc_spec){"w1", "w"}, buf, sizeof buf), "0.0.0.1");
    check_unique(s, "plain pool refused DHCP");
    state_close(s);

    /* h1 and h2 hold nothing in a DHCP pool: it cannot become plain until
     * they are gone; then it can. */
    s = fresh(16);
    if (!s)
        return;
    must_apply(s, &(struct pool_spec){"d", NULL, "0.0.0.0/32"});
    must_alloc(s, &(struct alloc_spec){"h1", "d"}, buf, sizeof buf);
    must_alloc(s, &(struct alloc_spec){"h2", "d"}, buf, sizeof buf);
    CHECK(apply(s, &(struct pool_spec){"d", NULL, "0.0.0.0/30"}, &created, &changed, &st) ==
          IPAM_EPRECOND);
    CHECK_MSG(strstr(st.msg, "cannot switch from DHCP mode") != NULL, "message `%s'", st.msg);
    CHECK(st_pool(s, "d")->dhcp && !st_lease(s, "h1")->held);
    CHECK(commit(s));
    restart_compare(&s, "DHCP pool refused plain");
    if (!s)
        return;
    must_release(s, "h1");
    must_release(s, "h2");
    CHECK(apply(s, &(struct pool_spec){"d", NULL, "0.0.0.0/30"}, &created, &changed, &st) ==
              IPAM_OK &&
          changed && !st_pool(s, "d")->dhcp);
    CHECK(commit(s));
    restart_compare(&s, "empty DHCP pool turned plain");
    if (!s)
        return;
    check_unique(s, "empty DHCP pool turned plain");
    state_close(s);
}

/* ---- events ----------------------------------------------------------- */

struct want_event {
    Ipam__V1__Event__Type type;
    const char *name; /* pool name or lease owner */
    const char *reason;
};

/* Checks the committed events from rev on against want, in order. */
static void check_events(const struct state *s, uint64_t rev, const struct want_event *want,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool gone = true;
        const struct event *e = st_event_from(s, rev + i, &gone);
        if (!CHECK_MSG(e && !gone && e->revision == rev + i, "event at revision %llu",
                       (unsigned long long)(rev + i)))
            return;
        Ipam__V1__Event *m = ipam__v1__event__unpack(NULL, e->len, e->data);
        if (!CHECK_MSG(m != NULL, "event %llu does not decode", (unsigned long long)(rev + i)))
            return;
        const char *name = m->pool ? m->pool->name : m->lease ? m->lease->owner : "";
        CHECK_MSG(m->type == want[i].type && m->revision == rev + i &&
                      strcmp(name, want[i].name) == 0 && strcmp(m->reason, want[i].reason) == 0,
                  "event %llu: type %d `%s' %s, want type %d `%s' %s",
                  (unsigned long long)(rev + i), m->type, name, m->reason, want[i].type,
                  want[i].name, want[i].reason);
        ipam__v1__event__free_unpacked(m, NULL);
    }
}

static void test_events(void)
{
    struct state *s = fresh(8);
    struct ipam_status st = {0};
    struct lease *l;
    uint32_t released;
    char buf[64];
    bool gone = true;

    if (!s)
        return;
    CHECK(st_event_from(s, 1, &gone) == NULL && !gone);
    must_apply(s, &(struct pool_spec){"e", NULL, "192.0.2.1-192.0.2.9"});
    must_alloc(s, &(struct alloc_spec){"e1", "e", .ttl = 5}, buf, sizeof buf);
    must_alloc(s, &(struct alloc_spec){"e2", "e"}, buf, sizeof buf);
    /* Not visible before the commit. */
    CHECK(st_event_from(s, 1, &gone) == NULL && !gone);
    CHECK(commit(s));
    const struct want_event first[] = {
        {IPAM__V1__EVENT__TYPE__POOL_PUT, "e", "created"},
        {IPAM__V1__EVENT__TYPE__LEASE_PUT, "e1", "allocated"},
        {IPAM__V1__EVENT__TYPE__LEASE_PUT, "e2", "allocated"},
    };
    check_events(s, 1, first, N(first));
    CHECK(st_event_from(s, 4, &gone) == NULL && !gone);
    const struct event *e;

    CHECK(st_renew(s, "e2", 30, &l, &st) == IPAM_OK);
    must_release(s, "e2");
    CHECK_EQ_INT(st_expire(s, INT64_MAX), 1);
    must_apply(s, &(struct pool_spec){"e", NULL, "192.0.2.1-192.0.2.9", true});
    must_alloc(s, &(struct alloc_spec){"e3", "e"}, buf, sizeof buf);
    CHECK(st_delete_pool(s, "e", true, &released, &st) == IPAM_OK && released == 1);
    CHECK(st_event_from(s, 4, &gone) == NULL && !gone);
    CHECK(commit(s));
    const struct want_event second[] = {
        {IPAM__V1__EVENT__TYPE__LEASE_PUT, "e2", "renewed"},
        {IPAM__V1__EVENT__TYPE__LEASE_DELETED, "e2", "released"},
        {IPAM__V1__EVENT__TYPE__LEASE_DELETED, "e1", "expired"},
        {IPAM__V1__EVENT__TYPE__POOL_PUT, "e", "updated"},
        {IPAM__V1__EVENT__TYPE__LEASE_PUT, "e3", "allocated"},
        {IPAM__V1__EVENT__TYPE__LEASE_DELETED, "e3", "pool deleted"},
        {IPAM__V1__EVENT__TYPE__POOL_DELETED, "e", "deleted"},
    };
    check_events(s, 4, second, N(second));
    /* The ring holds 8 events: revisions 3..10; older ones are gone. */
    CHECK(st_revision(s) == 10);
    CHECK(st_event_from(s, 2, &gone) == NULL && gone);
    e = st_event_from(s, 3, &gone);
    CHECK(e != NULL && e->revision == 3 && !gone);
    CHECK(st_event_from(s, 11, &gone) == NULL && !gone);

    /* After a restart nothing before it can be replayed; new events can. */
    s = restart(s, 8);
    if (!s)
        return;
    CHECK(st_revision(s) == 10);
    CHECK(st_event_from(s, 9, &gone) == NULL && gone);
    CHECK(st_event_from(s, 10, &gone) == NULL && gone);
    CHECK(st_event_from(s, 11, &gone) == NULL && !gone);
    must_apply(s, &(struct pool_spec){"f", NULL, "192.0.2.1-192.0.2.9"});
    CHECK(commit(s));
    const struct want_event third[] = {{IPAM__V1__EVENT__TYPE__POOL_PUT, "f", "created"}};
    check_events(s, 11, third, N(third));
    CHECK(st_event_from(s, 10, &gone) == NULL && gone);
    state_close(s);
}

int main(void)
{
    test_scenarios();
    test_dhcp_holds_nothing();
    test_pool_cannot_switch_dhcp_under_leases();
    test_apply_pool();
    test_delete_pool();
    test_pool_stats();
    test_ttl();
    test_renew();
    test_commit_failure();
    test_restart();
    test_events();
    fake_reset();
    return check_summary();
}
