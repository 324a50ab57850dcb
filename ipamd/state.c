/* The core state: pools, leases, spaces, revisions, events, group commit. */
#include "state.h"
#include "slab.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define MAX_BLOCKS 1024
#define MAX_LABELS 64
#define MAX_PORTS 64
#define MAX_LABEL_VALUE 1024

struct state {
    const struct store_backend *backend;
    struct store *store;
    struct avl pools;  /* struct pool by name */
    struct avl leases; /* struct lease by owner */
    struct avl expiry; /* struct expiry_ref by (expire_time, owner) */
    struct space *spaces;
    uint64_t rev, committed;
    /* After a failed commit no lease expires before this time: the reload
     * brings due leases back, and expiring them again at once would spin on
     * a store that keeps failing. */
    int64_t expire_hold, expire_seen; /* expire_seen: the `now' of the last st_expire */
    struct store_op *ops;
    size_t nops, capops;
    struct event *ring; /* events of revisions ring_first .. ring_first+nring-1 */
    size_t capring, headring, nring;
};

enum ipam_err ipam_fail(struct ipam_status *st, enum ipam_err e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof(st->msg), fmt, ap);
    va_end(ap);
    st->err = e;
    return e;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fputs("ipamd: out of memory\n", stderr);
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = xcalloc(1, n);
    memcpy(d, s, n);
    return d;
}

/* ---- indexes ---------------------------------------------------------- */

static int pool_cmp(const struct avl_node *a, const struct avl_node *b)
{
    return strcmp(avl_entry(a, struct pool, by_name)->name, avl_entry(b, struct pool, by_name)->name);
}
static int pool_key(const void *k, const struct avl_node *n)
{
    return strcmp(k, avl_entry(n, struct pool, by_name)->name);
}
static int owner_cmp(const struct avl_node *a, const struct avl_node *b)
{
    return strcmp(avl_entry(a, struct lease, by_owner)->owner,
                  avl_entry(b, struct lease, by_owner)->owner);
}
static int owner_key(const void *k, const struct avl_node *n)
{
    return strcmp(k, avl_entry(n, struct lease, by_owner)->owner);
}
/* Expiring leases are indexed out of line: most leases never expire, and a
 * node in every lease would cost them all. A lease finds its node by key. */
struct expiry_ref {
    struct avl_node n;
    struct lease *lease;
};
static int expiry_order(const struct lease *x, const struct lease *y)
{
    if (x->expire_time != y->expire_time)
        return x->expire_time < y->expire_time ? -1 : 1;
    return strcmp(x->owner, y->owner);
}
static int expiry_cmp(const struct avl_node *a, const struct avl_node *b)
{
    return expiry_order(avl_entry(a, struct expiry_ref, n)->lease,
                        avl_entry(b, struct expiry_ref, n)->lease);
}
static int expiry_key(const void *k, const struct avl_node *n)
{
    return expiry_order(k, avl_entry(n, struct expiry_ref, n)->lease);
}
static struct lease *expiry_lease(const struct avl_node *n)
{
    return n ? avl_entry(n, struct expiry_ref, n)->lease : NULL;
}

struct holder_key {
    ipam_u128 addr;
    const struct lease *lease;
};
static int holder_cmp(const struct avl_node *a, const struct avl_node *b)
{
    const struct lease_addr *x = avl_entry(a, struct lease_addr, n);
    const struct lease_addr *y = avl_entry(b, struct lease_addr, n);
    if (x->addr != y->addr)
        return x->addr < y->addr ? -1 : 1;
    const struct lease *lx = lease_addr_lease(x), *ly = lease_addr_lease(y);
    return lx < ly ? -1 : lx > ly;
}
static int holder_key(const void *k, const struct avl_node *n)
{
    const struct holder_key *key = k;
    const struct lease_addr *y = avl_entry(n, struct lease_addr, n);
    if (key->addr != y->addr)
        return key->addr < y->addr ? -1 : 1;
    const struct lease *ly = lease_addr_lease(y);
    return key->lease < ly ? -1 : key->lease > ly;
}

/* The first holder of addr in sp, or NULL. Holders of one address are
 * adjacent in the tree; walk them with next_holder. */
static struct lease_addr *first_holder(const struct space *sp, ipam_u128 addr)
{
    struct holder_key k = {addr, NULL};
    struct avl_node *n = avl_find_ge(&sp->holders, &k, holder_key);
    struct lease_addr *la = n ? avl_entry(n, struct lease_addr, n) : NULL;
    return la && la->addr == addr ? la : NULL;
}

static struct lease_addr *next_holder(const struct lease_addr *la)
{
    struct avl_node *n = avl_next(&la->n);
    struct lease_addr *nx = n ? avl_entry(n, struct lease_addr, n) : NULL;
    return nx && nx->addr == la->addr ? nx : NULL;
}

static struct space *space_get(struct state *s, const char *name, bool create)
{
    for (struct space *sp = s->spaces; sp; sp = sp->next)
        if (strcmp(sp->name, name) == 0)
            return sp;
    if (!create)
        return NULL;
    struct space *sp = xcalloc(1, sizeof(*sp));
    sp->name = xstrdup(name);
    usedidx_init(&sp->used);
    sp->next = s->spaces;
    s->spaces = sp;
    return sp;
}

static void hold(struct space *sp, struct lease_addr *la)
{
    if (!first_holder(sp, la->addr) && usedidx_mark(&sp->used, la->addr) != 0) {
        fputs("ipamd: out of memory\n", stderr);
        abort();
    }
    avl_insert(&sp->holders, &la->n, holder_cmp);
}

static void unhold(struct space *sp, struct lease_addr *la)
{
    avl_remove(&sp->holders, &la->n);
    if (!first_holder(sp, la->addr))
        usedidx_unmark(&sp->used, la->addr);
}

/* ---- objects ---------------------------------------------------------- */

static void pool_free(struct pool *p)
{
    if (!p)
        return;
    free(p->name);
    for (size_t i = 0; i < p->nblocks; i++)
        free(p->blocks[i]);
    free(p->blocks);
    ipam_set_free(&p->set);
    ipam_set_free(&p->raw);
    free(p);
}

/* The bytes of a lease's allocation: the struct, its addresses, its owner. */
static size_t lease_size(const struct lease *l)
{
    return (size_t)(l->owner - (const char *)l) + strlen(l->owner) + 1;
}

/* A zeroed lease with room for room (1 or 2) addresses and its owner stored
 * in the same allocation; lease_fit gives back the room naddr does not use. */
static struct lease *lease_new(const char *owner, size_t room)
{
    size_t n = strlen(owner) + 1;
    struct lease *l = slab_alloc(sizeof(*l) + room * sizeof(struct lease_addr) + n);
    l->owner = (char *)(l->addr + room);
    memcpy(l->owner, owner, n);
    return l;
}

/* Moves the owner right after addr[naddr] and shrinks the allocation; the
 * lease may move, so this runs before anything points at it. */
static struct lease *lease_fit(struct lease *l)
{
    if (l->owner == (char *)(l->addr + l->naddr))
        return l;
    size_t n = strlen(l->owner) + 1, size = sizeof(*l) + l->naddr * sizeof(struct lease_addr) + n;
    struct lease *m = slab_alloc(size);
    memcpy(m, l, sizeof(*l) + l->naddr * sizeof(struct lease_addr));
    m->owner = (char *)(m->addr + m->naddr);
    memcpy(m->owner, l->owner, n);
    slab_free(l, lease_size(l));
    return m;
}

static void expiry_add(struct state *s, struct lease *l)
{
    struct expiry_ref *r = slab_alloc(sizeof(*r));
    r->lease = l;
    avl_insert(&s->expiry, &r->n, expiry_cmp);
}

static void expiry_del(struct state *s, struct lease *l)
{
    struct avl_node *n = avl_find(&s->expiry, l, expiry_key);
    if (!n) {
        fputs("ipamd: internal error: an expiring lease is not indexed\n", stderr);
        abort();
    }
    avl_remove(&s->expiry, n);
    slab_free(avl_entry(n, struct expiry_ref, n), sizeof(struct expiry_ref));
}

void lease_free(struct lease *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->nlabels; i++) {
        free(l->labels[i].key);
        free(l->labels[i].value);
    }
    free(l->labels);
    free(l->ports);
    free(l->sharing_key);
    slab_free(l, lease_size(l));
}

static void lease_attach(struct state *s, struct lease *l)
{
    avl_insert(&s->leases, &l->by_owner, owner_cmp);
    if (l->expire_time)
        expiry_add(s, l);
    if (l->pool) {
        l->pool_prev = NULL;
        l->pool_next = l->pool->leases;
        if (l->pool->leases)
            l->pool->leases->pool_prev = l;
        l->pool->leases = l;
        l->pool->nleases++;
    }
    for (size_t i = 0; i < l->naddr && l->held; i++) {
        l->addr[i].n.aux = (int)i;
        hold(l->space, &l->addr[i]);
    }
}

static void lease_detach(struct state *s, struct lease *l)
{
    avl_remove(&s->leases, &l->by_owner);
    if (l->expire_time)
        expiry_del(s, l);
    if (l->pool) {
        if (l->pool_prev)
            l->pool_prev->pool_next = l->pool_next;
        else
            l->pool->leases = l->pool_next;
        if (l->pool_next)
            l->pool_next->pool_prev = l->pool_prev;
        l->pool->nleases--;
    }
    for (size_t i = 0; i < l->naddr && l->held; i++)
        unhold(l->space, &l->addr[i]);
}

/* ---- batch: store ops and events -------------------------------------- */

static void queue_op(struct state *s, enum store_kind kind, bool del, const char *key,
                     uint8_t *data, size_t len)
{
    if (s->nops == s->capops) {
        s->capops = s->capops ? 2 * s->capops : 64;
        struct store_op *n = realloc(s->ops, s->capops * sizeof(*n));
        if (!n) {
            fputs("ipamd: out of memory\n", stderr);
            abort();
        }
        s->ops = n;
    }
    s->ops[s->nops++] = (struct store_op){kind, del, xstrdup(key), data, len};
}

static void clear_ops(struct state *s)
{
    for (size_t i = 0; i < s->nops; i++) {
        free(s->ops[i].key);
        free(s->ops[i].data);
    }
    s->nops = 0;
}

static struct event *ring_at(const struct state *s, size_t i)
{
    return &s->ring[(s->headring + i) % s->capring];
}

static void ring_push(struct state *s, uint64_t rev, uint8_t *data, size_t len)
{
    if (s->nring == s->capring) {
        free(ring_at(s, 0)->data);
        s->headring = (s->headring + 1) % s->capring;
        s->nring--;
    }
    /* Revisions in the ring are contiguous; a gap (after a reload) empties it. */
    if (s->nring && ring_at(s, s->nring - 1)->revision + 1 != rev) {
        while (s->nring) {
            free(ring_at(s, 0)->data);
            s->headring = (s->headring + 1) % s->capring;
            s->nring--;
        }
    }
    *ring_at(s, s->nring) = (struct event){rev, data, len};
    s->nring++;
}

/* Bumps the revision and records one event for it. */
static uint64_t emit(struct state *s, Ipam__V1__Event__Type type, const struct pool *p,
                     const struct lease *l, const char *reason)
{
    struct arena a = ARENA_INIT;
    Ipam__V1__Event ev = IPAM__V1__EVENT__INIT;
    Ipam__V1__Pool pp;
    Ipam__V1__Lease lp;
    ev.type = type;
    ev.revision = ++s->rev;
    ev.reason = (char *)reason;
    if (p) {
        pool_to_pb(&a, p, false, &pp);
        ev.pool = &pp;
    }
    if (l) {
        lease_to_pb(&a, l, &lp);
        ev.lease = &lp;
    }
    size_t len;
    uint8_t *data = pb_pack(&ev.base, &len);
    ring_push(s, ev.revision, data, len);
    arena_free(&a);
    return ev.revision;
}

static void put_lease(struct state *s, const struct lease *l)
{
    struct arena a = ARENA_INIT;
    Ipam__V1__Lease lp;
    lease_to_pb(&a, l, &lp);
    size_t len;
    uint8_t *data = pb_pack(&lp.base, &len);
    queue_op(s, STORE_LEASE, false, l->owner, data, len);
    arena_free(&a);
}

static void put_pool(struct state *s, const struct pool *p)
{
    struct arena a = ARENA_INIT;
    Ipam__V1__Pool pp;
    pool_to_pb(&a, p, false, &pp);
    size_t len;
    uint8_t *data = pb_pack(&pp.base, &len);
    queue_op(s, STORE_POOL, false, p->name, data, len);
    arena_free(&a);
}

/* ---- validation ------------------------------------------------------- */

static bool valid_name(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 63)
        return false;
    for (const char *c = n; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            return false;
    return true;
}

/* Printable ASCII without spaces, 1..max bytes. */
static bool valid_token(const char *s, size_t max)
{
    size_t len = strlen(s);
    if (len == 0 || len > max)
        return false;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        if (*c <= 0x20 || *c >= 0x7f)
            return false;
    return true;
}

static bool valid_text(const char *s, size_t max)
{
    if (strlen(s) > max)
        return false;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return false;
    return true;
}

/* Copies labels into a lease after checking them. */
static enum ipam_err take_labels(struct lease *l, const struct label *in, size_t n,
                                 struct ipam_status *st)
{
    if (n > MAX_LABELS)
        return ipam_fail(st, IPAM_EINVAL, "too many labels (%zu, at most %d)", n, MAX_LABELS);
    for (size_t i = 0; i < n; i++) {
        if (!valid_token(in[i].key, 253))
            return ipam_fail(st, IPAM_EINVAL,
                             "invalid label key `%.64s': 1 to 253 printable characters, no spaces",
                             in[i].key);
        if (!valid_text(in[i].value, MAX_LABEL_VALUE))
            return ipam_fail(st, IPAM_EINVAL,
                             "invalid value for label `%s': at most %d characters, no control "
                             "characters",
                             in[i].key, MAX_LABEL_VALUE);
        for (size_t j = 0; j < i; j++)
            if (strcmp(in[i].key, in[j].key) == 0)
                return ipam_fail(st, IPAM_EINVAL, "label `%s' given twice", in[i].key);
    }
    l->labels = n ? xcalloc(n, sizeof(*l->labels)) : NULL;
    for (size_t i = 0; i < n; i++) {
        l->labels[i].key = xstrdup(in[i].key);
        l->labels[i].value = xstrdup(in[i].value);
    }
    l->nlabels = n;
    return IPAM_OK;
}

static enum ipam_err take_ports(struct lease *l, Ipam__V1__Port **in, size_t n,
                                struct ipam_status *st)
{
    if (n > MAX_PORTS)
        return ipam_fail(st, IPAM_EINVAL, "too many ports (%zu, at most %d)", n, MAX_PORTS);
    l->ports = n ? xcalloc(n, sizeof(*l->ports)) : NULL;
    for (size_t i = 0; i < n; i++) {
        int proto = port_proto_parse(in[i]->protocol);
        if (!proto)
            return ipam_fail(st, IPAM_EINVAL, "invalid protocol `%.32s': TCP, UDP or SCTP",
                             in[i]->protocol);
        if (in[i]->port < 1 || in[i]->port > 65535)
            return ipam_fail(st, IPAM_EINVAL, "invalid port %u: 1 to 65535", in[i]->port);
        l->ports[i] = (struct port){(uint8_t)proto, (uint16_t)in[i]->port};
    }
    l->nports = n;
    return IPAM_OK;
}

/* ---- pools ------------------------------------------------------------ */

static bool pool_same(const struct pool *a, const struct pool *b)
{
    if (strcmp(a->space->name, b->space->name) != 0 || a->nblocks != b->nblocks ||
        a->order != b->order || a->skip_end_ips != b->skip_end_ips ||
        a->avoid_buggy_ips != b->avoid_buggy_ips || a->allow_share != b->allow_share)
        return false;
    for (size_t i = 0; i < a->nblocks; i++)
        if (strcmp(a->blocks[i], b->blocks[i]) != 0)
            return false;
    return true;
}

/* Builds a detached pool from a message; its space is looked up, created if
 * needed (an unused space costs nothing and is harmless). */
static enum ipam_err pool_build(struct state *s, const Ipam__V1__Pool *in, struct pool **out,
                                struct ipam_status *st)
{
    char err[400];
    if (!valid_name(in->name))
        return ipam_fail(st, IPAM_EINVAL,
                         "invalid pool name `%.64s': 1 to 63 of A-Z a-z 0-9 . _ -", in->name);
    const char *space = in->space[0] ? in->space : IPAM_DEFAULT_SPACE;
    if (!valid_name(space))
        return ipam_fail(st, IPAM_EINVAL,
                         "invalid space `%.64s' in pool `%s': 1 to 63 of A-Z a-z 0-9 . _ -",
                         in->space, in->name);
    if (in->n_blocks == 0)
        return ipam_fail(st, IPAM_EINVAL, "pool `%s' has no blocks", in->name);
    if (in->n_blocks > MAX_BLOCKS)
        return ipam_fail(st, IPAM_EINVAL, "pool `%s' has %zu blocks, at most %d", in->name,
                         in->n_blocks, MAX_BLOCKS);
    if (in->search_order != IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_ASC &&
        in->search_order != IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC)
        return ipam_fail(st, IPAM_EINVAL, "invalid search order %d in pool `%s'",
                         (int)in->search_order, in->name);
    struct pool *p = xcalloc(1, sizeof(*p));
    if (ipam_set_from_blocks((const char *const *)in->blocks, in->n_blocks, in->skip_end_ips,
                             &p->set, err, sizeof(err)) != 0 ||
        ipam_set_from_blocks((const char *const *)in->blocks, in->n_blocks, false, &p->raw, err,
                             sizeof(err)) != 0) {
        pool_free(p);
        return ipam_fail(st, IPAM_EINVAL, "pool `%s': %s", in->name, err);
    }
    p->name = xstrdup(in->name);
    p->blocks = xcalloc(in->n_blocks, sizeof(char *));
    for (size_t i = 0; i < in->n_blocks; i++)
        p->blocks[i] = xstrdup(in->blocks[i]);
    p->nblocks = in->n_blocks;
    p->order = in->search_order;
    p->skip_end_ips = in->skip_end_ips;
    p->avoid_buggy_ips = in->avoid_buggy_ips;
    p->allow_share = in->allow_share;
    p->dhcp = p->raw.n == 1 && p->raw.r[0].lo == ipam_v4(0) && p->raw.r[0].hi == ipam_v4(0) &&
              in->n_blocks == 1;
    p->space = space_get(s, space, true);
    p->create_revision = in->create_revision;
    p->revision = in->revision;
    *out = p;
    return IPAM_OK;
}

enum ipam_err st_apply_pool(struct state *s, const Ipam__V1__Pool *in, struct pool **out,
                            bool *created, bool *changed, struct ipam_status *st)
{
    struct pool *p;
    Ipam__V1__Pool spec = *in;
    spec.create_revision = spec.revision = 0;
    enum ipam_err e = pool_build(s, &spec, &p, st);
    if (e)
        return e;
    struct pool *old = st_pool(s, in->name);
    *created = old == NULL;
    *changed = true;
    if (old && pool_same(old, p)) {
        pool_free(p);
        *changed = false;
        *out = old;
        return IPAM_OK;
    }
    if (old && old->space != p->space && old->nleases) {
        e = ipam_fail(st, IPAM_EPRECOND,
                      "pool `%s' has %zu leases in space `%s': it cannot move to space `%s'",
                      old->name, old->nleases, old->space->name, p->space->name);
        pool_free(p);
        return e;
    }
    if (old && old->dhcp != p->dhcp && old->nleases) {
        /* DHCP leases hold nothing and others hold their address: switching
         * would leave leases holding what the mode says they don't. */
        e = ipam_fail(st, IPAM_EPRECOND,
                      "pool `%s' has %zu leases: it cannot switch %s DHCP mode (0.0.0.0/32)",
                      old->name, old->nleases, p->dhcp ? "to" : "from");
        pool_free(p);
        return e;
    }
    if (old) {
        /* Replace in place so leases keep pointing at the same pool. */
        struct pool tmp = *old;
        old->space = p->space;
        old->blocks = p->blocks;
        old->nblocks = p->nblocks;
        old->set = p->set;
        old->raw = p->raw;
        old->order = p->order;
        old->skip_end_ips = p->skip_end_ips;
        old->avoid_buggy_ips = p->avoid_buggy_ips;
        old->allow_share = p->allow_share;
        old->dhcp = p->dhcp;
        p->blocks = tmp.blocks;
        p->nblocks = tmp.nblocks;
        p->set = tmp.set;
        p->raw = tmp.raw;
        pool_free(p);
        p = old;
    } else {
        avl_insert(&s->pools, &p->by_name, pool_cmp);
        p->create_revision = s->rev + 1;
    }
    p->revision = s->rev + 1;
    emit(s, IPAM__V1__EVENT__TYPE__POOL_PUT, p, NULL, *created ? "created" : "updated");
    put_pool(s, p);
    *out = p;
    return IPAM_OK;
}

struct pool *st_pool(const struct state *s, const char *name)
{
    struct avl_node *n = avl_find(&s->pools, name, pool_key);
    return n ? avl_entry(n, struct pool, by_name) : NULL;
}

struct pool *st_pool_first(const struct state *s)
{
    struct avl_node *n = avl_first(&s->pools);
    return n ? avl_entry(n, struct pool, by_name) : NULL;
}

struct pool *st_pool_next(const struct pool *p)
{
    struct avl_node *n = avl_next(&p->by_name);
    return n ? avl_entry(n, struct pool, by_name) : NULL;
}

/* Removes a lease for good: revision, event, store op. */
static void drop_lease(struct state *s, struct lease *l, const char *reason)
{
    l->revision = s->rev + 1;
    emit(s, IPAM__V1__EVENT__TYPE__LEASE_DELETED, NULL, l, reason);
    queue_op(s, STORE_LEASE, true, l->owner, NULL, 0);
    lease_detach(s, l);
}

enum ipam_err st_delete_pool(struct state *s, const char *name, bool force, uint32_t *released,
                             struct ipam_status *st)
{
    struct pool *p = st_pool(s, name);
    if (!p)
        return ipam_fail(st, IPAM_ENOTFOUND, "pool `%.64s' not found", name);
    if (p->nleases && !force)
        return ipam_fail(st, IPAM_EPRECOND,
                         "pool `%s' has %zu leases: release them first or delete with force",
                         name, p->nleases);
    *released = (uint32_t)p->nleases;
    while (p->leases) {
        struct lease *l = p->leases;
        drop_lease(s, l, "pool deleted");
        lease_free(l);
    }
    p->revision = s->rev + 1;
    emit(s, IPAM__V1__EVENT__TYPE__POOL_DELETED, p, NULL, "deleted");
    queue_op(s, STORE_POOL, true, p->name, NULL, 0);
    avl_remove(&s->pools, &p->by_name);
    pool_free(p);
    return IPAM_OK;
}

void st_pool_stats(const struct pool *p, struct pool_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < p->set.n; i++) {
        ipam_range r = p->set.r[i];
        bool v4 = ipam_is_v4(r.lo);
        bool avoid = v4 && p->avoid_buggy_ips;
        ipam_u128 total = r.hi - r.lo + 1;
        if (avoid)
            total -= ipam_buggy_count(r.lo, r.hi);
        out->total[!v4] += total;
        out->used[!v4] += usedidx_count(&p->space->used, r.lo, r.hi, avoid);
    }
}

/* ---- leases ----------------------------------------------------------- */

struct lease *st_lease(const struct state *s, const char *owner)
{
    struct avl_node *n = avl_find(&s->leases, owner, owner_key);
    return n ? avl_entry(n, struct lease, by_owner) : NULL;
}

struct lease *st_lease_after(const struct state *s, const char *after)
{
    struct avl_node *n = avl_find_ge(&s->leases, after, owner_key);
    if (n && strcmp(avl_entry(n, struct lease, by_owner)->owner, after) == 0)
        n = avl_next(n);
    return n ? avl_entry(n, struct lease, by_owner) : NULL;
}

struct lease *st_lease_next(const struct lease *l)
{
    struct avl_node *n = avl_next(&l->by_owner);
    return n ? avl_entry(n, struct lease, by_owner) : NULL;
}

size_t st_lease_count(const struct state *s) { return s->leases.count; }

static bool ports_disjoint(const struct port *a, size_t na, const struct port *b, size_t nb)
{
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            if (a[i].proto == b[j].proto && a[i].port == b[j].port)
                return false;
    return true;
}

/* Whether the would-be lease l may hold addr in its space: no holder, or
 * every holder shares under the rules. Sets *holder to a refusing holder. */
static bool can_hold(const struct lease *l, ipam_u128 addr, const struct lease **holder)
{
    bool allow = l->pool && l->pool->allow_share;
    for (const struct lease_addr *h = first_holder(l->space, addr); h; h = next_holder(h)) {
        const struct lease *o = lease_addr_lease(h);
        bool same_key = l->sharing_key && strcmp(l->sharing_key, lease_sharing_key(o)) == 0;
        bool both_allow = allow && o->pool && o->pool->allow_share;
        if (!l->nports || !o->nports || !(same_key || both_allow) ||
            !ports_disjoint(l->ports, l->nports, o->ports, o->nports)) {
            *holder = o;
            return false;
        }
    }
    return true;
}

/* For a lease that may share: the best address of family f, in the pool's
 * search order, already held by leases it can share with. Linear in the
 * pool's leases, and only run for sharing requests. */
static bool find_shared(const struct lease *l, ipam_family f, ipam_u128 *out)
{
    bool found = false, desc = l->pool->order == IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC;
    for (const struct lease *o = l->pool->leases; o; o = o->pool_next) {
        for (size_t i = 0; i < o->naddr && o->held; i++) {
            ipam_u128 a = o->addr[i].addr;
            const struct lease *h;
            /* Only what the pool would hand out itself: a requested .0 or
             * .255 is honoured for its holder, never offered to sharers
             * of a pool that avoids them. */
            if (ipam_family_of(a) != f || !ipam_set_contains(&l->pool->set, a) ||
                (l->pool->avoid_buggy_ips && ipam_is_buggy(a)))
                continue;
            if (found && (desc ? a <= *out : a >= *out))
                continue;
            if (can_hold(l, a, &h)) {
                *out = a;
                found = true;
            }
        }
    }
    return found;
}

static const char *family_name(ipam_family f) { return f == IPAM_FAMILY_V4 ? "IPv4" : "IPv6"; }

static enum ipam_err existing_lease(const struct lease *l, const Ipam__V1__AllocateRequest *req,
                                    struct ipam_status *st)
{
    char buf[IPAM_ADDR_STRLEN];
    if (strcmp(lease_pool_name(l), req->pool) != 0)
        return ipam_fail(st, IPAM_EPRECOND,
                         "owner `%s' already holds %s from pool `%s': release it first", l->owner,
                         ipam_addr_format(l->addr[0].addr, buf), lease_pool_name(l));
    /* A static reservation's space is what its pool is to other leases. */
    const char *space = req->space[0] ? req->space : IPAM_DEFAULT_SPACE;
    if (!l->pool && strcmp(l->space->name, space) != 0)
        return ipam_fail(st, IPAM_EPRECOND,
                         "owner `%s' already holds %s in space `%s': release it first", l->owner,
                         ipam_addr_format(l->addr[0].addr, buf), l->space->name);
    for (size_t i = 0; i < req->n_addresses; i++) {
        ipam_u128 a;
        bool held = false;
        if (ipam_addr_parse(req->addresses[i], strlen(req->addresses[i]), &a) == 0)
            for (size_t j = 0; j < l->naddr; j++)
                held |= l->addr[j].addr == a;
        if (!held)
            return ipam_fail(st, IPAM_EPRECOND,
                             "owner `%s' already holds a lease without %.64s: release it first",
                             l->owner, req->addresses[i]);
    }
    return IPAM_OK;
}

/* Decides the addresses of a new lease; changes nothing. */
static enum ipam_err choose_addresses(struct state *s, struct lease *l,
                                      const Ipam__V1__AllocateRequest *req,
                                      struct ipam_status *st)
{
    ipam_u128 want[2] = {0, 0};
    bool wanted[2] = {false, false}; /* requested address per family [v4, v6] */
    char buf[IPAM_ADDR_STRLEN];

    if (req->n_addresses > 2)
        return ipam_fail(st, IPAM_EINVAL, "at most two addresses (one per family), got %zu",
                         req->n_addresses);
    for (size_t i = 0; i < req->n_addresses; i++) {
        ipam_u128 a;
        if (ipam_addr_parse(req->addresses[i], strlen(req->addresses[i]), &a) != 0)
            return ipam_fail(st, IPAM_EINVAL, "invalid address `%.64s'", req->addresses[i]);
        int k = !ipam_is_v4(a);
        if (wanted[k])
            return ipam_fail(st, IPAM_EINVAL, "two %s addresses requested",
                             family_name(ipam_family_of(a)));
        want[k] = a;
        wanted[k] = true;
    }

    /* Static reservation: the requested addresses, outside every pool. */
    if (!l->pool) {
        if (!req->n_addresses)
            return ipam_fail(st, IPAM_EINVAL,
                             "a static reservation (no pool) needs its addresses");
        for (struct pool *p = st_pool_first(s); p; p = st_pool_next(p))
            for (int k = 0; k < 2; k++)
                if (wanted[k] && p->space == l->space && ipam_set_contains(&p->raw, want[k]))
                    return ipam_fail(st, IPAM_EINVAL,
                                     "address %s is in pool `%s': allocate it from that pool",
                                     ipam_addr_format(want[k], buf), p->name);
    }

    /* Which families, in which order. */
    bool has[2] = {l->pool && ipam_set_has_family(&l->pool->raw, IPAM_FAMILY_V4),
                   l->pool && ipam_set_has_family(&l->pool->raw, IPAM_FAMILY_V6)};
    int fams[2], nf = 0;
    bool required = true;
    int first = req->primary_family == IPAM__V1__FAMILY__FAMILY_IPV6 ? 1 : 0;
    switch (req->family) {
    case IPAM__V1__FAMILY__FAMILY_UNSPECIFIED:
        if (req->n_addresses) {
            for (int k = 0; k < 2; k++)
                if (wanted[(first + k) % 2])
                    fams[nf++] = (first + k) % 2;
        } else {
            fams[nf++] = has[0] ? 0 : 1;
        }
        break;
    case IPAM__V1__FAMILY__FAMILY_IPV4:
        fams[nf++] = 0;
        break;
    case IPAM__V1__FAMILY__FAMILY_IPV6:
        fams[nf++] = 1;
        break;
    case IPAM__V1__FAMILY__FAMILY_PREFER_DUAL_STACK:
        required = false;
        /* fall through */
    case IPAM__V1__FAMILY__FAMILY_REQUIRE_DUAL_STACK:
        fams[nf++] = first;
        fams[nf++] = !first;
        break;
    default:
        return ipam_fail(st, IPAM_EINVAL, "invalid family %d", (int)req->family);
    }
    if (req->primary_family != IPAM__V1__FAMILY__FAMILY_UNSPECIFIED &&
        req->primary_family != IPAM__V1__FAMILY__FAMILY_IPV4 &&
        req->primary_family != IPAM__V1__FAMILY__FAMILY_IPV6)
        return ipam_fail(st, IPAM_EINVAL, "invalid primary family %d: IPv4 or IPv6",
                         (int)req->primary_family);
    for (int k = 0; k < 2; k++) {
        bool listed = false;
        for (int i = 0; i < nf; i++)
            listed |= fams[i] == k;
        if (wanted[k] && !listed)
            return ipam_fail(st, IPAM_EINVAL, "address %s is not of the requested family",
                             ipam_addr_format(want[k], buf));
        if (!l->pool && listed && !wanted[k])
            return ipam_fail(st, IPAM_EINVAL,
                             "a static reservation needs an %s address for its family",
                             family_name(k ? IPAM_FAMILY_V6 : IPAM_FAMILY_V4));
    }

    if (l->pool && l->pool->dhcp) {
        /* Every request gets 0.0.0.0 and holds nothing. */
        l->addr[0].addr = ipam_v4(0);
        l->naddr = 1;
        l->held = false;
        return IPAM_OK;
    }

    bool sharing = l->nports && (l->sharing_key || (l->pool && l->pool->allow_share));
    enum ipam_err miss = IPAM_OK;
    for (int i = 0; i < nf; i++) {
        int k = fams[i];
        ipam_family f = k ? IPAM_FAMILY_V6 : IPAM_FAMILY_V4;
        ipam_u128 a;
        const struct lease *h = NULL;
        if (wanted[k]) {
            a = want[k];
            if (l->pool && !ipam_set_contains(&l->pool->raw, a))
                return ipam_fail(st, IPAM_EINVAL, "address %s is not in pool `%s'",
                                 ipam_addr_format(a, buf), l->pool->name);
            if (!can_hold(l, a, &h))
                return ipam_fail(st, IPAM_EEXIST, "address %s is held by owner `%s'",
                                 ipam_addr_format(a, buf), h->owner);
        } else if (!has[k]) {
            miss = ipam_fail(st, IPAM_EPRECOND, "pool `%s' has no %s addresses", l->pool->name,
                             family_name(f));
            if (required)
                return miss;
            continue;
        } else if (!(sharing && find_shared(l, f, &a)) &&
                   !usedidx_first_free(&l->space->used, &l->pool->set, f,
                                       l->pool->order == IPAM__V1__SEARCH_ORDER__SEARCH_ORDER_DESC,
                                       l->pool->avoid_buggy_ips, &a)) {
            miss = ipam_fail(st, IPAM_EEXHAUSTED, "pool `%s' has no free %s address",
                             l->pool->name, family_name(f));
            if (required)
                return miss;
            continue;
        }
        l->addr[l->naddr++].addr = a;
    }
    if (!l->naddr)
        return miss ? miss : ipam_fail(st, IPAM_EINTERNAL, "no address chosen");
    l->held = true;
    return IPAM_OK;
}

enum ipam_err st_allocate(struct state *s, const Ipam__V1__AllocateRequest *req,
                          struct lease **out, bool *created, struct ipam_status *st)
{
    if (!valid_token(req->owner, 253))
        return ipam_fail(st, IPAM_EINVAL,
                         "invalid owner `%.64s': 1 to 253 printable characters, no spaces",
                         req->owner);
    struct lease *old = st_lease(s, req->owner);
    if (old) {
        enum ipam_err e = existing_lease(old, req, st);
        if (e)
            return e;
        *out = old;
        *created = false;
        return IPAM_OK;
    }
    if (req->ttl_seconds > IPAM_MAX_TTL)
        return ipam_fail(st, IPAM_EINVAL, "ttl %u seconds is more than ten years (%u)",
                         req->ttl_seconds, IPAM_MAX_TTL);
    if (req->sharing_key[0] && !valid_token(req->sharing_key, 253))
        return ipam_fail(st, IPAM_EINVAL,
                         "invalid sharing key `%.64s': printable characters, no spaces",
                         req->sharing_key);

    /* Room for the addresses the request can get: shrinking later would
     * leave a hole per lease in the heap. */
    bool single = req->family == IPAM__V1__FAMILY__FAMILY_IPV4 ||
                  req->family == IPAM__V1__FAMILY__FAMILY_IPV6 ||
                  (req->family == IPAM__V1__FAMILY__FAMILY_UNSPECIFIED && req->n_addresses <= 1);
    struct lease *l = lease_new(req->owner, single ? 1 : 2);
    enum ipam_err e;
    if (req->pool[0]) {
        l->pool = st_pool(s, req->pool);
        if (!l->pool) {
            e = ipam_fail(st, IPAM_ENOTFOUND, "pool `%.64s' not found", req->pool);
            goto fail;
        }
        if (req->space[0] && strcmp(req->space, l->pool->space->name) != 0) {
            e = ipam_fail(st, IPAM_EINVAL, "pool `%s' is in space `%s', not `%.64s'",
                          l->pool->name, l->pool->space->name, req->space);
            goto fail;
        }
        l->space = l->pool->space;
    } else {
        const char *space = req->space[0] ? req->space : IPAM_DEFAULT_SPACE;
        if (!valid_name(space)) {
            e = ipam_fail(st, IPAM_EINVAL, "invalid space `%.64s'", req->space);
            goto fail;
        }
        l->space = space_get(s, space, true);
    }
    l->sharing_key = req->sharing_key[0] ? xstrdup(req->sharing_key) : NULL;
    struct label labels[MAX_LABELS];
    for (size_t i = 0; i < req->n_labels && i < MAX_LABELS; i++)
        labels[i] = (struct label){req->labels[i]->key, req->labels[i]->value};
    if ((e = take_labels(l, labels, req->n_labels, st)) ||
        (e = take_ports(l, req->ports, req->n_ports, st)) ||
        (e = choose_addresses(s, l, req, st)))
        goto fail;

    l->ttl = req->ttl_seconds;
    l->create_time = time(NULL);
    l->expire_time = l->ttl ? l->create_time + l->ttl : 0;
    l->create_revision = l->revision = s->rev + 1;
    l = lease_fit(l);
    lease_attach(s, l);
    emit(s, IPAM__V1__EVENT__TYPE__LEASE_PUT, NULL, l, "allocated");
    put_lease(s, l);
    *out = l;
    *created = true;
    return IPAM_OK;
fail:
    l->pool = NULL;
    lease_free(l);
    return e;
}

enum ipam_err st_release(struct state *s, const char *owner, struct lease **out,
                         struct ipam_status *st)
{
    struct lease *l = st_lease(s, owner);
    if (!l)
        return ipam_fail(st, IPAM_ENOTFOUND, "owner `%.64s' holds no lease", owner);
    drop_lease(s, l, "released");
    *out = l;
    return IPAM_OK;
}

enum ipam_err st_renew(struct state *s, const char *owner, uint32_t ttl, struct lease **out,
                       struct ipam_status *st)
{
    struct lease *l = st_lease(s, owner);
    if (!l)
        return ipam_fail(st, IPAM_ENOTFOUND, "owner `%.64s' holds no lease", owner);
    if (ttl > IPAM_MAX_TTL)
        return ipam_fail(st, IPAM_EINVAL, "ttl %u seconds is more than ten years (%u)", ttl,
                         IPAM_MAX_TTL);
    *out = l;
    if (!ttl)
        ttl = l->ttl;
    if (!ttl)
        return IPAM_OK; /* A lease without expiry has nothing to renew. */
    if (l->expire_time)
        expiry_del(s, l);
    l->ttl = ttl;
    l->expire_time = time(NULL) + ttl;
    expiry_add(s, l);
    l->revision = s->rev + 1;
    emit(s, IPAM__V1__EVENT__TYPE__LEASE_PUT, NULL, l, "renewed");
    put_lease(s, l);
    return IPAM_OK;
}

size_t st_expire(struct state *s, int64_t now)
{
    size_t n = 0;
    s->expire_seen = now;
    if (now < s->expire_hold)
        return 0;
    struct lease *l;
    while ((l = expiry_lease(avl_first(&s->expiry))) && l->expire_time <= now) {
        drop_lease(s, l, "expired");
        lease_free(l);
        n++;
    }
    return n;
}

int64_t st_next_expiry(const struct state *s)
{
    const struct lease *l = expiry_lease(avl_first(&s->expiry));
    if (!l)
        return 0;
    int64_t t = l->expire_time;
    return t < s->expire_hold ? s->expire_hold : t;
}

/* ---- loading, committing, reloading ----------------------------------- */

static int load_pool(struct state *s, const char *key, const uint8_t *data, size_t len, char *err,
                     size_t errlen)
{
    Ipam__V1__Pool *m = ipam__v1__pool__unpack(NULL, len, data);
    struct ipam_status st;
    struct pool *p;
    int rc = -1;
    if (!m) {
        snprintf(err, errlen, "stored pool `%.64s' cannot be decoded", key);
        return -1;
    }
    if (strcmp(m->name, key) != 0) {
        snprintf(err, errlen, "stored pool `%.64s' carries the name `%.64s'", key, m->name);
        goto out;
    }
    if (pool_build(s, m, &p, &st) != IPAM_OK) {
        snprintf(err, errlen, "stored pool is invalid: %s", st.msg);
        goto out;
    }
    avl_insert(&s->pools, &p->by_name, pool_cmp);
    rc = 0;
out:
    ipam__v1__pool__free_unpacked(m, NULL);
    return rc;
}

static int load_lease(struct state *s, const char *key, const uint8_t *data, size_t len,
                      char *err, size_t errlen)
{
    Ipam__V1__Lease *m = ipam__v1__lease__unpack(NULL, len, data);
    struct ipam_status st;
    struct lease *l = NULL;
    int rc = -1;
    if (!m) {
        snprintf(err, errlen, "stored lease `%.64s' cannot be decoded", key);
        return -1;
    }
    if (strcmp(m->owner, key) != 0 || m->n_addresses < 1 || m->n_addresses > 2) {
        snprintf(err, errlen, "stored lease `%.64s' is malformed", key);
        goto out;
    }
    l = lease_new(m->owner, m->n_addresses); /* exactly: loading millions must not fragment */
    if (m->pool[0]) {
        l->pool = st_pool(s, m->pool);
        if (!l->pool) {
            snprintf(err, errlen, "stored lease `%.64s' names unknown pool `%.64s'", key,
                     m->pool);
            goto out;
        }
        l->space = l->pool->space;
    } else {
        l->space = space_get(s, m->space[0] ? m->space : IPAM_DEFAULT_SPACE, true);
    }
    for (size_t i = 0; i < m->n_addresses; i++)
        if (ipam_addr_parse(m->addresses[i], strlen(m->addresses[i]), &l->addr[i].addr) != 0) {
            snprintf(err, errlen, "stored lease `%.64s' has a bad address", key);
            goto out;
        }
    l->naddr = (uint8_t)m->n_addresses;
    /* A DHCP lease is exactly 0.0.0.0 and holds nothing. */
    l->held = !(l->pool && l->pool->dhcp); /* A pool never switches mode with leases. */
    struct label labels[MAX_LABELS];
    for (size_t i = 0; i < m->n_labels && i < MAX_LABELS; i++)
        labels[i] = (struct label){m->labels[i]->key, m->labels[i]->value};
    if (take_labels(l, labels, m->n_labels, &st) ||
        take_ports(l, m->ports, m->n_ports, &st)) {
        snprintf(err, errlen, "stored lease `%.64s': %s", key, st.msg);
        goto out;
    }
    l->sharing_key = m->sharing_key[0] ? xstrdup(m->sharing_key) : NULL;
    l->ttl = m->ttl_seconds;
    l->expire_time = m->expire_time;
    l->create_time = m->create_time;
    l->create_revision = m->create_revision;
    l->revision = m->revision;
    l = lease_fit(l);
    lease_attach(s, l);
    l = NULL;
    rc = 0;
out:
    if (l) {
        l->pool = NULL;
        lease_free(l);
    }
    ipam__v1__lease__free_unpacked(m, NULL);
    return rc;
}

static int load_object(void *ctx, enum store_kind kind, const char *key, const uint8_t *data,
                       size_t len, char *err, size_t errlen)
{
    return kind == STORE_POOL ? load_pool(ctx, key, data, len, err, errlen)
                              : load_lease(ctx, key, data, len, err, errlen);
}

static void clear_memory(struct state *s)
{
    struct avl_node *n;
    while ((n = avl_first(&s->leases))) {
        struct lease *l = avl_entry(n, struct lease, by_owner);
        lease_detach(s, l);
        lease_free(l);
    }
    while ((n = avl_first(&s->pools))) {
        avl_remove(&s->pools, n);
        pool_free(avl_entry(n, struct pool, by_name));
    }
    while (s->spaces) {
        struct space *sp = s->spaces;
        s->spaces = sp->next;
        usedidx_free(&sp->used);
        free(sp->name);
        free(sp);
    }
}

static int load(struct state *s, char *err, size_t errlen)
{
    struct store_loader loader = {s, load_object};
    uint64_t rev = 0;
    if (s->backend->load(s->store, &loader, &rev, err, errlen) != 0)
        return -1;
    s->rev = s->committed = rev;
    return 0;
}

struct state *state_open(const struct store_backend *b, const char *data_dir, size_t event_ring,
                         char *err, size_t errlen)
{
    struct state *s = xcalloc(1, sizeof(*s));
    s->backend = b;
    s->capring = event_ring ? event_ring : 1;
    s->ring = xcalloc(s->capring, sizeof(*s->ring));
    s->store = b->open(data_dir, err, errlen);
    if (!s->store || load(s, err, errlen) != 0) {
        state_close(s);
        return NULL;
    }
    return s;
}

void state_close(struct state *s)
{
    if (!s)
        return;
    clear_memory(s);
    clear_ops(s);
    free(s->ops);
    while (s->nring) {
        free(ring_at(s, 0)->data);
        s->headring = (s->headring + 1) % s->capring;
        s->nring--;
    }
    free(s->ring);
    if (s->store)
        s->backend->close(s->store);
    free(s);
}

uint64_t st_revision(const struct state *s) { return s->rev; }
uint64_t st_committed(const struct state *s) { return s->committed; }
bool st_dirty(const struct state *s) { return s->rev != s->committed; }

int st_commit(struct state *s, char *err, size_t errlen)
{
    if (!st_dirty(s))
        return 0;
    if (s->backend->commit(s->store, s->rev, s->ops, s->nops, err, errlen) == 0) {
        clear_ops(s);
        s->committed = s->rev;
        return 0;
    }
    /* Memory now holds changes the store refused: drop them and the events
     * that announce them, and read back what is durable. */
    clear_ops(s);
    while (s->nring && ring_at(s, s->nring - 1)->revision > s->committed) {
        free(ring_at(s, s->nring - 1)->data);
        s->nring--;
    }
    clear_memory(s);
    /* The caller's clock and time() may disagree by a tick (time() can be
     * the coarse clock): hold past both, but never trust a caller's time
     * further ahead than that. */
    int64_t now = time(NULL);
    bool ahead = s->expire_seen > now && s->expire_seen - now <= 1;
    s->expire_hold = (ahead ? s->expire_seen : now) + 1;
    char lerr[512];
    if (load(s, lerr, sizeof(lerr)) != 0) {
        fprintf(stderr, "ipamd: cannot reload the store after a failed commit: %s\n", lerr);
        abort();
    }
    return -1;
}

const struct event *st_event_from(const struct state *s, uint64_t rev, bool *gone)
{
    *gone = false;
    if (rev > s->committed)
        return NULL;
    if (!s->nring || rev < ring_at(s, 0)->revision) {
        *gone = true;
        return NULL;
    }
    uint64_t i = rev - ring_at(s, 0)->revision;
    if (i >= s->nring)
        return NULL;
    const struct event *e = ring_at(s, (size_t)i);
    return e->revision <= s->committed ? e : NULL;
}
