/* Fuzz harness for ipamd's RPC requests applied to the core (ipamd/api.c, state.c, codec.c,
 * usedidx.c).
 *
 * The input is a sequence of records, each
 *
 *   method (1 byte) | length (2 bytes, little-endian) | request (length bytes)
 *
 * where method indexes api_methods[] (Watch streams are skipped; a server
 * reflection request gets its answer, which must be a valid response echoing
 * it) and the request is that method's protobuf message, checked
 * (pb_validate), decoded and handed to its handler as the server does; a
 * length past the end is cut to the end. Three further method bytes drive the
 * store instead: 0xf0 expires leases (the first 4 request bytes,
 * little-endian, are seconds from now), 0xf1 makes the next commit fail, 0xf2
 * restarts (closes the state and opens it again on the same store). The state
 * runs on an in-memory fake store and commits after every record.
 *
 * After every step the state must keep what the README and state.h promise:
 * a failed request changes nothing; replies are valid messages; an
 * automatically chosen address is the first free one in search order; no
 * address is held twice in a space unless every holder shares it (ports on
 * both, disjoint, same sharing key or both from allow_share pools); the
 * used-address index holds exactly the held addresses; indexes and pool
 * lease lists agree; counts add up; committed revisions only grow and every
 * committed revision has its event; a restart, or a failed commit, gives
 * back exactly what was committed. */
#include "fuzz.h"

#include <stdbool.h>
#include <time.h>

#include "api.h"
#include "codec.h"
#include "fake_store.h"
#include "reflection.h"
#include "state.h"
#include "usedidx.h"

#define FUZZ_MAX_INPUT 65536
#define MAX_STEPS 200
#define RING 16 /* small, so the event ring wraps */
#define SCAN_LIMIT 4096

#define OP_EXPIRE 0xf0
#define OP_FAIL_COMMIT 0xf1
#define OP_RESTART 0xf2

static struct state *open_state(void)
{
    char err[512] = "";
    struct state *s = state_open(&fake_backend, "unused", RING, err, sizeof err);
    FUZZ_ASSERT(s != NULL, "state_open on what was committed: %s", err);
    return s;
}

/* ---- snapshots: everything a client can read, packed ------------------ */

struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void buf_add(struct buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        FUZZ_ASSERT(np != NULL, "out of memory");
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void buf_add_msg(struct buf *b, const ProtobufCMessage *m)
{
    size_t len;
    uint8_t *d = pb_pack(m, &len);
    buf_add(b, &len, sizeof len);
    buf_add(b, d, len);
    free(d);
}

static void snapshot(const struct state *s, struct buf *out)
{
    struct arena a = ARENA_INIT;
    uint64_t rev = st_revision(s);

    out->n = 0;
    buf_add(out, &rev, sizeof rev);
    for (struct pool *p = st_pool_first(s); p; p = st_pool_next(p)) {
        Ipam__V1__Pool m;
        pool_to_pb(&a, p, true, &m);
        buf_add_msg(out, &m.base);
    }
    for (struct lease *l = st_lease_after(s, ""); l; l = st_lease_next(l)) {
        Ipam__V1__Lease m;
        lease_to_pb(&a, l, &m);
        buf_add_msg(out, &m.base);
    }
    arena_free(&a);
}

static bool buf_equal(const struct buf *a, const struct buf *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

/* ---- invariants ------------------------------------------------------- */

struct holder {
    const struct space *sp;
    ipam_u128 a;
    const struct lease *l;
};

static int holder_cmp(const void *x, const void *y)
{
    const struct holder *a = x, *b = y;
    if (a->sp != b->sp)
        return (uintptr_t)a->sp < (uintptr_t)b->sp ? -1 : 1;
    if (a->a != b->a)
        return a->a < b->a ? -1 : 1;
    return 0;
}

static bool ports_disjoint(const struct lease *a, const struct lease *b)
{
    for (size_t i = 0; i < a->nports; i++)
        for (size_t j = 0; j < b->nports; j++)
            if (a->ports[i].proto == b->ports[j].proto && a->ports[i].port == b->ports[j].port)
                return false;
    return true;
}

/* Whether a and b may hold one address. Pools' allow_share is read as it
 * is now; once some pool with leases had it turned off (relaxed), leases it
 * allowed to share keep sharing, so only ports are checked then. */
static bool may_share(const struct lease *a, const struct lease *b, bool relaxed)
{
    const char *ka = lease_sharing_key(a), *kb = lease_sharing_key(b);
    bool same_key = ka[0] && strcmp(ka, kb) == 0;
    bool both_allow = a->pool && b->pool && a->pool->allow_share && b->pool->allow_share;
    return a->nports && b->nports && ports_disjoint(a, b) &&
           (same_key || both_allow || (relaxed && a->pool && b->pool));
}

static void check_space_counts(const struct space *sp, const struct holder *h, size_t nh)
{
    ipam_u128 distinct = 0;
    for (size_t i = 0; i < nh; i++)
        if (h[i].sp == sp && (i == 0 || h[i - 1].sp != sp || h[i - 1].a != h[i].a))
            distinct++;
    FUZZ_ASSERT(usedidx_count(&sp->used, 0, ~(ipam_u128)0, false) == distinct,
                "space `%s' index counts other than the %llu held addresses", sp->name,
                (unsigned long long)distinct);
    FUZZ_ASSERT(usedidx_intervals(&sp->used) <= distinct, "more intervals than addresses");
}

static void check_pool(const struct state *s, const struct pool *p)
{
    size_t n = 0;
    const struct lease *prev = NULL;
    struct pool_stats ps;

    FUZZ_ASSERT(st_pool(s, p->name) == p, "pool `%s' is not found by name", p->name);
    FUZZ_ASSERT(p->space != NULL, "pool `%s' has no space", p->name);
    fuzz_check_set(&p->set);
    fuzz_check_set(&p->raw);
    for (size_t i = 0; i < p->set.n; i++) {
        size_t k = ipam_set_lower(&p->raw, p->set.r[i].lo);
        FUZZ_ASSERT(k < p->raw.n && p->raw.r[k].lo <= p->set.r[i].lo &&
                        p->set.r[i].hi <= p->raw.r[k].hi,
                    "pool `%s' can allocate outside its blocks", p->name);
    }
    FUZZ_ASSERT(p->revision >= p->create_revision && p->revision <= st_revision(s),
                "pool `%s' revisions", p->name);
    for (const struct lease *l = p->leases; l; l = l->pool_next) {
        FUZZ_ASSERT(l->pool == p, "lease `%s' is listed in pool `%s' but is not its", l->owner,
                    p->name);
        FUZZ_ASSERT(l->pool_prev == prev, "pool `%s' list is broken at `%s'", p->name, l->owner);
        FUZZ_ASSERT(st_lease(s, l->owner) == l, "listed lease `%s' is not indexed", l->owner);
        prev = l;
        n++;
        FUZZ_ASSERT(n <= st_lease_count(s), "pool `%s' lease list loops", p->name);
    }
    FUZZ_ASSERT(n == p->nleases, "pool `%s' lists %zu leases, counts %zu", p->name, n, p->nleases);
    st_pool_stats(p, &ps);
    for (int f = 0; f < 2; f++) {
        ipam_u128 total = ipam_set_count(&p->set, f ? IPAM_FAMILY_V6 : IPAM_FAMILY_V4);
        if (!f && p->avoid_buggy_ips)
            for (size_t i = 0; i < p->set.n; i++)
                if (ipam_is_v4(p->set.r[i].lo))
                    total -= ipam_buggy_count(p->set.r[i].lo, p->set.r[i].hi);
        FUZZ_ASSERT(ps.total[f] == total, "pool `%s' total", p->name);
        FUZZ_ASSERT(ps.used[f] <= ps.total[f], "pool `%s' uses more than it has", p->name);
    }
}

static void check_state(const struct state *s, bool relaxed)
{
    size_t nleases = st_lease_count(s), nh = 0, seen = 0;
    struct holder *h = calloc(2 * nleases + 1, sizeof(*h));
    const struct lease *prev = NULL;
    const struct pool *pprev = NULL;

    FUZZ_ASSERT(h != NULL, "out of memory");
    FUZZ_ASSERT(st_committed(s) <= st_revision(s), "committed past the revision");
    FUZZ_ASSERT(st_dirty(s) == (st_committed(s) != st_revision(s)), "dirty");

    for (const struct pool *p = st_pool_first(s); p; p = st_pool_next(p)) {
        FUZZ_ASSERT(!pprev || strcmp(pprev->name, p->name) < 0, "pools out of order");
        check_pool(s, p);
        pprev = p;
    }

    for (const struct lease *l = st_lease_after(s, ""); l; l = st_lease_next(l)) {
        FUZZ_ASSERT(++seen <= nleases, "more leases than st_lease_count");
        FUZZ_ASSERT(!prev || strcmp(prev->owner, l->owner) < 0, "leases out of order");
        FUZZ_ASSERT(st_lease(s, l->owner) == l, "lease `%s' is not found by owner", l->owner);
        FUZZ_ASSERT(l->naddr == 1 || l->naddr == 2, "lease `%s' has %u addresses", l->owner,
                    l->naddr);
        FUZZ_ASSERT(l->naddr == 1 || ipam_is_v4(l->addr[0].addr) != ipam_is_v4(l->addr[1].addr),
                    "lease `%s' holds two addresses of one family", l->owner);
        if (l->pool) {
            FUZZ_ASSERT(st_pool(s, lease_pool_name(l)) == l->pool, "lease `%s' pool", l->owner);
            FUZZ_ASSERT(l->space == l->pool->space, "lease `%s' is in another space than its pool",
                        l->owner);
        }
        FUZZ_ASSERT(l->held == !(l->pool && l->pool->dhcp), "lease `%s' held", l->owner);
        if (!l->held)
            FUZZ_ASSERT(l->naddr == 1 && l->addr[0].addr == ipam_v4(0), "DHCP lease `%s'",
                        l->owner);
        FUZZ_ASSERT((l->ttl == 0) == (l->expire_time == 0), "lease `%s' ttl %u expires at %lld",
                    l->owner, l->ttl, (long long)l->expire_time);
        FUZZ_ASSERT(l->revision >= l->create_revision && l->revision <= st_revision(s),
                    "lease `%s' revisions", l->owner);
        for (size_t i = 0; i < l->nports; i++)
            FUZZ_ASSERT(l->ports[i].proto >= 1 && l->ports[i].proto <= 3 && l->ports[i].port >= 1,
                        "lease `%s' port %zu", l->owner, i);
        for (size_t i = 0; i < l->nlabels; i++)
            for (size_t j = 0; j < i; j++)
                FUZZ_ASSERT(strcmp(l->labels[i].key, l->labels[j].key) != 0,
                            "lease `%s' has label `%s' twice", l->owner, l->labels[i].key);
        for (size_t i = 0; i < l->naddr && l->held; i++) {
            FUZZ_ASSERT(usedidx_has(&l->space->used, l->addr[i].addr),
                        "address of lease `%s' is not in the used index", l->owner);
            h[nh++] = (struct holder){l->space, l->addr[i].addr, l};
        }
        prev = l;
    }
    FUZZ_ASSERT(seen == nleases, "%zu leases walked, %zu counted", seen, nleases);

    qsort(h, nh, sizeof(*h), holder_cmp);
    for (size_t i = 0; i < nh; i++) {
        for (size_t j = i + 1; j < nh && h[j].sp == h[i].sp && h[j].a == h[i].a; j++) {
            char buf[IPAM_ADDR_STRLEN];
            FUZZ_ASSERT(may_share(h[i].l, h[j].l, relaxed),
                        "address %s is held by `%s' and `%s', which may not share",
                        ipam_addr_format(h[i].a, buf), h[i].l->owner, h[j].l->owner);
        }
        if (i == 0 || h[i - 1].sp != h[i].sp)
            check_space_counts(h[i].sp, h, nh);
    }
    for (const struct pool *p = st_pool_first(s); p; p = st_pool_next(p))
        check_space_counts(p->space, h, nh);
    free(h);
}

/* Every newly committed revision has its event, decodable and in order. */
static void check_events(const struct state *s, uint64_t from, uint64_t to)
{
    bool gone;

    FUZZ_ASSERT(st_event_from(s, to + 1, &gone) == NULL && !gone, "event past the commit");
    if (to - from >= RING)
        return;
    for (uint64_t r = from + 1; r <= to; r++) {
        const struct event *e = st_event_from(s, r, &gone);
        FUZZ_ASSERT(e != NULL && !gone && e->revision == r, "no event for revision %llu",
                    (unsigned long long)r);
        Ipam__V1__Event *m = ipam__v1__event__unpack(NULL, e->len, e->data);
        FUZZ_ASSERT(m != NULL && m->revision == r, "event %llu does not decode",
                    (unsigned long long)r);
        FUZZ_ASSERT(m->type >= IPAM__V1__EVENT__TYPE__POOL_PUT &&
                        m->type <= IPAM__V1__EVENT__TYPE__LEASE_DELETED &&
                        (m->pool != NULL) != (m->lease != NULL),
                    "event %llu of type %d", (unsigned long long)r, (int)m->type);
        ipam__v1__event__free_unpacked(m, NULL);
    }
}

/* An address the pool chose itself is the first free one in its search
 * order: every address of the pool's set before it (skipping IPv4 .0 and
 * .255 when the pool avoids them) is held. Checked up to SCAN_LIMIT
 * addresses. */
static void check_first_free(const struct lease *l, ipam_u128 a)
{
    const struct pool *p = l->pool;
    bool desc = p->order == IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC;
    bool avoid = p->avoid_buggy_ips && ipam_is_v4(a);
    char buf[IPAM_ADDR_STRLEN], bbuf[IPAM_ADDR_STRLEN];
    size_t steps = 0;

    FUZZ_ASSERT(ipam_set_contains(&p->set, a), "lease `%s' got %s, outside pool `%s'", l->owner,
                ipam_addr_format(a, buf), p->name);
    FUZZ_ASSERT(!avoid || !ipam_is_buggy(a), "lease `%s' got %s from a pool avoiding it", l->owner,
                ipam_addr_format(a, buf));
    for (size_t k = 0; k < p->set.n; k++) {
        ipam_range r = p->set.r[desc ? p->set.n - 1 - k : k];
        if (ipam_family_of(r.lo) != ipam_family_of(a))
            continue;
        for (ipam_u128 b = desc ? r.hi : r.lo;; b = desc ? b - 1 : b + 1) {
            if (b == a || ++steps > SCAN_LIMIT)
                return;
            if (!(avoid && ipam_is_buggy(b)))
                FUZZ_ASSERT(usedidx_has(&l->space->used, b),
                            "lease `%s' got %s from pool `%s', but %s was free", l->owner,
                            ipam_addr_format(a, buf), p->name, ipam_addr_format(b, bbuf));
            if (b == (desc ? r.lo : r.hi))
                break;
        }
    }
}

static void check_allocated(const struct state *s, const Ipam__V1__AllocateRequest *req,
                            const Ipam__V1__AllocateResponse *rep)
{
    const struct lease *l = st_lease(s, req->owner);
    bool requested[2] = {false, false};

    FUZZ_ASSERT(l != NULL, "allocated lease `%s' is not there", req->owner);
    FUZZ_ASSERT(rep->lease && strcmp(rep->lease->owner, req->owner) == 0 &&
                    rep->lease->n_addresses == l->naddr,
                "reply for `%s'", req->owner);
    if (!rep->created)
        return;
    FUZZ_ASSERT(strcmp(lease_pool_name(l), req->pool) == 0, "lease `%s' pool", l->owner);
    for (size_t i = 0; i < req->n_addresses; i++) {
        ipam_u128 a;
        bool got = false;
        FUZZ_ASSERT(ipam_addr_parse(req->addresses[i], strlen(req->addresses[i]), &a) == 0,
                    "accepted address `%s' does not parse", req->addresses[i]);
        requested[!ipam_is_v4(a)] = true;
        for (size_t j = 0; j < l->naddr; j++)
            got |= l->addr[j].addr == a;
        FUZZ_ASSERT(got || !l->held, "lease `%s' did not get requested %s", l->owner,
                    req->addresses[i]);
    }
    if (!l->pool || !l->held || (l->nports && (lease_sharing_key(l)[0] || l->pool->allow_share)))
        return;
    for (size_t i = 0; i < l->naddr; i++)
        if (!requested[!ipam_is_v4(l->addr[i].addr)])
            check_first_free(l, l->addr[i].addr);
}

static void check_reply(const struct api_method *m, const ProtobufCMessage *req,
                        const ProtobufCMessage *reply)
{
    FUZZ_ASSERT(reply != NULL, "%s succeeded without a reply", m->path);
    FUZZ_ASSERT(protobuf_c_message_check(reply), "%s reply is not a valid message", m->path);
    size_t len;
    uint8_t *d = pb_pack(reply, &len);
    ProtobufCMessage *back = protobuf_c_message_unpack(reply->descriptor, NULL, len, d);
    FUZZ_ASSERT(back != NULL, "%s reply does not decode", m->path);
    protobuf_c_message_free_unpacked(back, NULL);
    free(d);

    if (m->input == &ipam__v1__list_leases_request__descriptor) {
        const Ipam__V1__ListLeasesRequest *q = (const void *)req;
        const Ipam__V1__ListLeasesResponse *r = (const void *)reply;
        size_t plen = strlen(q->owner_prefix);
        FUZZ_ASSERT(r->n_leases <= (q->page_size ? q->page_size : 1000), "page too long");
        for (size_t i = 0; i < r->n_leases; i++) {
            FUZZ_ASSERT(i == 0 || strcmp(r->leases[i - 1]->owner, r->leases[i]->owner) < 0,
                        "ListLeases out of order");
            FUZZ_ASSERT(strncmp(r->leases[i]->owner, q->owner_prefix, plen) == 0,
                        "ListLeases `%s' lacks prefix", r->leases[i]->owner);
            FUZZ_ASSERT(strcmp(r->leases[i]->owner, q->page_token) > 0,
                        "ListLeases `%s' is not after the page token", r->leases[i]->owner);
            FUZZ_ASSERT(!q->pool[0] || strcmp(r->leases[i]->pool, q->pool) == 0,
                        "ListLeases `%s' of another pool", r->leases[i]->owner);
        }
    }
}

/* ---- the run ---------------------------------------------------------- */

/* FUZZ_RPC_TRACE=1 in the environment prints every call and its outcome. */
static bool trace;

struct run {
    struct state *s;
    uint64_t committed; /* last committed revision seen */
    struct buf durable; /* snapshot at that revision */
    bool relaxed;       /* some pool with leases stopped allowing sharing */
};

static void commit(struct run *r)
{
    char err[512] = "";
    uint64_t rev = st_revision(r->s);
    /* An injected failure stays armed until a commit has something to do. */
    bool injected = fake.fail_next;

    if (st_commit(r->s, err, sizeof err) != 0) {
        struct buf now = {0};
        FUZZ_ASSERT(injected, "commit failed: %s", err);
        FUZZ_ASSERT(st_revision(r->s) == r->committed && st_committed(r->s) == r->committed,
                    "after a failed commit the revision is %llu, committed was %llu",
                    (unsigned long long)st_revision(r->s), (unsigned long long)r->committed);
        snapshot(r->s, &now);
        FUZZ_ASSERT(buf_equal(&now, &r->durable), "a failed commit did not restore the state");
        free(now.p);
        return;
    }
    FUZZ_ASSERT(st_committed(r->s) == rev && !st_dirty(r->s), "commit left changes");
    FUZZ_ASSERT(rev >= r->committed, "committed revision went back from %llu to %llu",
                (unsigned long long)r->committed, (unsigned long long)rev);
    if (rev != r->committed) {
        check_events(r->s, r->committed, rev);
        r->committed = rev;
        snapshot(r->s, &r->durable);
    }
}

static void restart(struct run *r)
{
    struct buf now = {0};
    state_close(r->s);
    r->s = open_state();
    FUZZ_ASSERT(st_revision(r->s) == r->committed && !st_dirty(r->s),
                "restart at revision %llu, committed %llu", (unsigned long long)st_revision(r->s),
                (unsigned long long)r->committed);
    snapshot(r->s, &now);
    FUZZ_ASSERT(buf_equal(&now, &r->durable), "a restart does not give back the committed state");
    free(now.p);
}

static void call(struct run *r, const struct api_method *m, const uint8_t *p, size_t len)
{
    ProtobufCMessage *req = NULL;
    struct api_ctx ctx = {.state = r->s, .arena = ARENA_INIT, .serving = true};
    struct ipam_status st = {IPAM_OK, ""};
    ProtobufCMessage *reply = NULL;
    struct buf before = {0};
    bool had_pool = false, had_share = false;
    const char *pool_name = NULL;

    /* As the server decodes: checked raw bytes first, then unpacked. */
    char why[256];
    memset(why, 'x', sizeof why);
    if (pb_validate(m->input, p, len, why, sizeof why) != 0) {
        FUZZ_ASSERT(memchr(why, '\0', sizeof why) && why[0] && why[0] != 'x',
                    "%s: refused without a reason", m->path);
        return;
    }
    req = protobuf_c_message_unpack(m->input, NULL, len, p);
    if (!req)
        return;
    if (m->kind == API_WRITE)
        snapshot(r->s, &before);
    if (m->input == &ipam__v1__apply_pool_request__descriptor) {
        const Ipam__V1__ApplyPoolRequest *q = (const void *)req;
        const struct pool *old = q->pool ? st_pool(r->s, q->pool->name) : NULL;
        pool_name = q->pool ? q->pool->name : NULL;
        had_pool = old != NULL;
        had_share = old && old->allow_share && old->nleases;
    }
    uint64_t rev = st_revision(r->s);

    enum ipam_err e = m->handler(&ctx, req, &reply, &st);
    if (trace)
        fprintf(stderr, "%s: %s\n", m->path, e == IPAM_OK ? "ok" : st.msg);
    if (e != IPAM_OK) {
        FUZZ_ASSERT(e == st.err && e <= IPAM_EINTERNAL, "%s: error %d, status %d", m->path, e,
                    st.err);
        FUZZ_ASSERT(e != IPAM_EINTERNAL, "%s: internal error: %s", m->path, st.msg);
        FUZZ_ASSERT(st.msg[0] != '\0' && memchr(st.msg, '\0', sizeof st.msg),
                    "%s: error without a message", m->path);
        FUZZ_ASSERT(st_revision(r->s) == rev, "%s failed and bumped the revision", m->path);
        if (m->kind == API_WRITE) {
            struct buf after = {0};
            snapshot(r->s, &after);
            FUZZ_ASSERT(buf_equal(&before, &after), "%s failed (%s) and changed the state", m->path,
                        st.msg);
            free(after.p);
        }
    } else {
        check_reply(m, req, reply);
        if (m->kind == API_READ)
            FUZZ_ASSERT(st_revision(r->s) == rev, "%s is a read and bumped the revision", m->path);
        if (m->input == &ipam__v1__allocate_request__descriptor)
            check_allocated(r->s, (const void *)req, (const void *)reply);
        if (pool_name) {
            const Ipam__V1__ApplyPoolResponse *a = (const void *)reply;
            FUZZ_ASSERT(a->created == !had_pool, "ApplyPool created is %d", a->created);
            FUZZ_ASSERT((st_revision(r->s) > rev) == (a->changed != 0), "ApplyPool changed");
            if (had_share && !st_pool(r->s, pool_name)->allow_share)
                r->relaxed = true;
        }
        if (m->input == &ipam__v1__release_request__descriptor)
            FUZZ_ASSERT(!st_lease(r->s, ((const Ipam__V1__ReleaseRequest *)req)->owner),
                        "released lease is still there");
    }
    check_state(r->s, r->relaxed);
    arena_free(&ctx.arena);
    free(before.p);
    protobuf_c_message_free_unpacked(req, NULL);
}

/* A reflection request, decoded as the server does, and its answer. */
static void reflect(const struct api_method *m, const uint8_t *p, size_t len)
{
    char why[256], err[256];
    FUZZ_ASSERT(refl_init(err, sizeof err) == 0, "reflection: %s", err);
    if (pb_validate(m->input, p, len, why, sizeof why) != 0)
        return;
    Grpc__Reflection__V1__ServerReflectionRequest *req =
        (void *)protobuf_c_message_unpack(m->input, NULL, len, p);
    if (!req)
        return;
    size_t n;
    uint8_t *out = refl_answer(req, &n);
    Grpc__Reflection__V1__ServerReflectionResponse *resp =
        grpc__reflection__v1__server_reflection_response__unpack(NULL, n, out);
    FUZZ_ASSERT(resp != NULL, "reflection: the answer does not decode");
    FUZZ_ASSERT(resp->message_response_case !=
                    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET,
                "reflection: an answer with nothing in it");
    FUZZ_ASSERT(resp->original_request &&
                    resp->original_request->message_request_case == req->message_request_case,
                "reflection: the request is not echoed");
    if (resp->message_response_case ==
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE)
        FUZZ_ASSERT(resp->error_response->error_code != 0 &&
                        resp->error_response->error_message[0],
                    "reflection: an error without a code or a message");
    if (resp->message_response_case ==
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE)
        FUZZ_ASSERT(resp->file_descriptor_response->n_file_descriptor_proto > 0,
                    "reflection: a file answer with no file");
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);
    free(out);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run r = {0};
    size_t steps = 0;

    if (size > FUZZ_MAX_INPUT)
        return 0;
    trace = getenv("FUZZ_RPC_TRACE") != NULL;
    fake_reset();
    r.s = open_state();
    snapshot(r.s, &r.durable);

    while (size >= 3 && steps++ < MAX_STEPS) {
        uint8_t op = data[0];
        size_t len = (size_t)data[1] | (size_t)data[2] << 8;
        data += 3;
        size -= 3;
        if (len > size)
            len = size;
        if (op < api_nmethods && api_methods[op].handler) {
            call(&r, &api_methods[op], data, len);
        } else if (op < api_nmethods && api_methods[op].kind == API_REFLECTION) {
            reflect(&api_methods[op], data, len);
        } else if (op == OP_EXPIRE) {
            uint32_t secs = 0;
            for (size_t i = 0; i < 4 && i < len; i++)
                secs |= (uint32_t)data[i] << (8 * i);
            size_t before = st_lease_count(r.s);
            size_t n = st_expire(r.s, (int64_t)time(NULL) + secs % (IPAM_MAX_TTL + 2));
            FUZZ_ASSERT(st_lease_count(r.s) + n == before, "expired %zu of %zu", n, before);
            check_state(r.s, r.relaxed);
        } else if (op == OP_FAIL_COMMIT) {
            fake.fail_next = true;
        } else if (op == OP_RESTART) {
            commit(&r);
            restart(&r);
            check_state(r.s, r.relaxed);
        }
        commit(&r);
        check_state(r.s, r.relaxed);
        data += len;
        size -= len;
    }
    restart(&r);
    state_close(r.s);
    free(r.durable.p);
    fake_reset();
    return 0;
}
