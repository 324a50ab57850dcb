/* Used-address index: coalesced intervals with bridging for .0/.255 avoidance. */
#include "usedidx.h"

#include <assert.h>
#include <stdlib.h>

struct iv {
    struct avl_node n;
    ipam_u128 lo, hi;
    ipam_u128 sum;      /* addresses in this subtree */
    bool bridged;       /* the gap to the next interval holds only buggy IPv4 */
    bool any_unbridged; /* some node of this subtree is not bridged */
};

#define IV(p) avl_entry(p, struct iv, n)

static ipam_u128 sum_of(const struct avl_node *n) { return n ? IV(n)->sum : 0; }
static bool any_of(const struct avl_node *n) { return n && IV(n)->any_unbridged; }

static void iv_update(struct avl_node *n)
{
    struct iv *v = IV(n);
    v->sum = (v->hi - v->lo + 1) + sum_of(n->l) + sum_of(n->r);
    v->any_unbridged = !v->bridged || any_of(n->l) || any_of(n->r);
}

static int iv_cmp(const struct avl_node *a, const struct avl_node *b)
{
    return IV(a)->lo < IV(b)->lo ? -1 : IV(a)->lo > IV(b)->lo;
}

/* Orders an address key against an interval by its start. */
static int iv_key(const void *key, const struct avl_node *n)
{
    ipam_u128 a = *(const ipam_u128 *)key;
    return a < IV(n)->lo ? -1 : a > IV(n)->lo;
}

static void tree_init(struct avl *t)
{
    t->root = NULL;
    t->update = iv_update;
    t->count = 0;
}

static void tree_free(struct avl *t)
{
    struct avl_node *n = t->root;
    /* Post-order teardown without recursion: descend, free leaves, climb. */
    while (n) {
        if (n->l) {
            n = n->l;
        } else if (n->r) {
            n = n->r;
        } else {
            struct avl_node *p = n->p;
            if (p) {
                if (p->l == n)
                    p->l = NULL;
                else
                    p->r = NULL;
            }
            free(IV(n));
            n = p;
        }
    }
    t->root = NULL;
    t->count = 0;
}

void usedidx_init(struct usedidx *u)
{
    tree_init(&u->used);
    tree_init(&u->buggy);
}

void usedidx_free(struct usedidx *u)
{
    tree_free(&u->used);
    tree_free(&u->buggy);
}

size_t usedidx_intervals(const struct usedidx *u) { return u->used.count; }

ipam_u128 ipam_buggy_count(ipam_u128 lo, ipam_u128 hi)
{
    /* Buggy addresses at or below v: the .0 and .255 of every full /24 below,
     * the .0 of v's own /24, and its .255 if v is it. */
    uint32_t l = (uint32_t)lo, h = (uint32_t)hi;
    ipam_u128 up_h = 2 * (ipam_u128)(h >> 8) + 1 + ((h & 0xff) == 0xff);
    ipam_u128 up_l = 2 * (ipam_u128)(l >> 8) + 1 + ((l & 0xff) == 0xff);
    return up_h - up_l + ipam_is_buggy(lo);
}

/* Whether every address strictly between a and b (a < b, b > a + 1) is a
 * buggy IPv4 address: at most two of them, .255 then .0. */
static bool gap_bridgeable(ipam_u128 a, ipam_u128 b)
{
    if (!ipam_is_v4(a) || !ipam_is_v4(b) || b - a - 1 > 2)
        return false;
    for (ipam_u128 x = a + 1; x < b; x++)
        if (!ipam_is_buggy(x))
            return false;
    return true;
}

static struct iv *containing(const struct avl *t, ipam_u128 a)
{
    struct avl_node *n = avl_find_le(t, &a, iv_key);
    return n && IV(n)->hi >= a ? IV(n) : NULL;
}

static void set_bridge(struct avl *t, struct iv *v)
{
    struct avl_node *next = avl_next(&v->n);
    v->bridged = next && gap_bridgeable(v->hi, IV(next)->lo);
    avl_touch(t, &v->n);
}

static int tree_mark(struct avl *t, ipam_u128 a)
{
    struct avl_node *ln = avl_find_le(t, &a, iv_key);
    struct iv *l = ln ? IV(ln) : NULL;
    assert(!l || l->hi < a);
    struct avl_node *rn = l ? avl_next(&l->n) : avl_first(t);
    struct iv *r = rn ? IV(rn) : NULL;
    bool join_l = l && l->hi + 1 == a;
    bool join_r = r && r->lo == a + 1;

    if (join_l && join_r) {
        l->hi = r->hi;
        avl_remove(t, &r->n);
        free(r);
        set_bridge(t, l);
    } else if (join_l) {
        l->hi = a;
        set_bridge(t, l);
    } else if (join_r) {
        r->lo = a; /* Still ordered: nothing lies between l and r. */
        avl_touch(t, &r->n);
        if (l)
            set_bridge(t, l);
    } else {
        struct iv *v = calloc(1, sizeof(*v));
        if (!v)
            return -1;
        v->lo = v->hi = a;
        v->bridged = r && gap_bridgeable(a, r->lo);
        avl_insert(t, &v->n, iv_cmp);
        if (l)
            set_bridge(t, l);
    }
    return 0;
}

static int tree_unmark(struct avl *t, ipam_u128 a)
{
    struct iv *v = containing(t, a);
    assert(v);
    if (v->lo == a && v->hi == a) {
        struct avl_node *pn = avl_prev(&v->n);
        avl_remove(t, &v->n);
        free(v);
        if (pn)
            set_bridge(t, IV(pn));
    } else if (v->lo == a) {
        v->lo = a + 1;
        avl_touch(t, &v->n);
        struct avl_node *pn = avl_prev(&v->n);
        if (pn)
            set_bridge(t, IV(pn));
    } else if (v->hi == a) {
        v->hi = a - 1;
        set_bridge(t, v);
    } else {
        struct iv *m = calloc(1, sizeof(*m));
        if (!m)
            return -1;
        m->lo = a + 1;
        m->hi = v->hi;
        m->bridged = v->bridged;
        v->hi = a - 1;
        avl_insert(t, &m->n, iv_cmp);
        set_bridge(t, v);
    }
    return 0;
}

int usedidx_mark(struct usedidx *u, ipam_u128 a)
{
    /* The buggy tree only feeds counts, so it goes first: if the used tree
     * then runs out of memory and the undo does too, a count is off by one
     * but no address can be handed out twice. */
    if (ipam_is_buggy(a) && tree_mark(&u->buggy, a) != 0)
        return -1;
    if (tree_mark(&u->used, a) != 0) {
        if (ipam_is_buggy(a))
            (void)tree_unmark(&u->buggy, a);
        return -1;
    }
    return 0;
}

void usedidx_unmark(struct usedidx *u, ipam_u128 a)
{
    /* A split needs one allocation; if it fails the address stays marked
     * (held, never handed out twice) rather than corrupting the index. */
    if (tree_unmark(&u->used, a) == 0 && ipam_is_buggy(a))
        (void)tree_unmark(&u->buggy, a);
}

bool usedidx_has(const struct usedidx *u, ipam_u128 a) { return containing(&u->used, a) != NULL; }

/* Held addresses <= a. */
static ipam_u128 count_upto(const struct avl *t, ipam_u128 a)
{
    ipam_u128 acc = 0;
    const struct avl_node *n = t->root;
    while (n) {
        const struct iv *v = IV(n);
        if (a < v->lo) {
            n = n->l;
            continue;
        }
        acc += sum_of(n->l);
        if (a <= v->hi)
            return acc + (a - v->lo + 1);
        acc += v->hi - v->lo + 1;
        n = n->r;
    }
    return acc;
}

static ipam_u128 tree_count(const struct avl *t, ipam_u128 lo, ipam_u128 hi)
{
    return count_upto(t, hi) - (lo ? count_upto(t, lo - 1) : 0);
}

ipam_u128 usedidx_count(const struct usedidx *u, ipam_u128 lo, ipam_u128 hi, bool avoid_buggy)
{
    ipam_u128 c = tree_count(&u->used, lo, hi);
    /* The buggy tree holds IPv4 addresses only, so this is exact for any
     * range, also one that starts below the IPv4-mapped space. */
    if (avoid_buggy)
        c -= tree_count(&u->buggy, lo, hi);
    return c;
}

/* The leftmost unbridged node of a subtree known to hold one. */
static struct avl_node *leftmost_unbridged(struct avl_node *n)
{
    for (;;) {
        if (any_of(n->l))
            n = n->l;
        else if (!IV(n)->bridged)
            return n;
        else
            n = n->r;
    }
}

static struct avl_node *rightmost_unbridged(struct avl_node *n)
{
    for (;;) {
        if (any_of(n->r))
            n = n->r;
        else if (!IV(n)->bridged)
            return n;
        else
            n = n->l;
    }
}

/* The first unbridged node at or after n: the end of n's bridged run. */
static struct avl_node *run_end(struct avl_node *n)
{
    if (!IV(n)->bridged)
        return n;
    if (any_of(n->r))
        return leftmost_unbridged(n->r);
    for (; n->p; n = n->p) {
        if (n->p->l != n)
            continue;
        if (!IV(n->p)->bridged)
            return n->p;
        if (any_of(n->p->r))
            return leftmost_unbridged(n->p->r);
    }
    return NULL; /* Unreachable: the last node is never bridged. */
}

/* The last unbridged node strictly before n, or NULL. */
static struct avl_node *prev_unbridged(struct avl_node *n)
{
    if (any_of(n->l))
        return rightmost_unbridged(n->l);
    for (; n->p; n = n->p) {
        if (n->p->r != n)
            continue;
        if (!IV(n->p)->bridged)
            return n->p;
        if (any_of(n->p->l))
            return rightmost_unbridged(n->p->l);
    }
    return NULL;
}

static ipam_u128 skip_buggy_up(ipam_u128 a)
{
    if (!ipam_is_v4(a))
        return a;
    if ((a & 0xff) == 0)
        return a + 1;
    if ((a & 0xff) == 0xff)
        return a + 2;
    return a;
}

static ipam_u128 skip_buggy_down(ipam_u128 a)
{
    if (!ipam_is_v4(a))
        return a;
    if ((a & 0xff) == 0xff)
        return a - 1;
    if ((a & 0xff) == 0)
        return a - 2;
    return a;
}

/* First free address in [lo, hi] ascending. Each step jumps past one whole
 * run, and a run is maximal, so the loop turns at most a few times. */
static bool free_asc(const struct avl *t, ipam_u128 lo, ipam_u128 hi, bool avoid, ipam_u128 *out)
{
    ipam_u128 a = lo;
    for (;;) {
        if (avoid)
            a = skip_buggy_up(a);
        if (a > hi || a < lo)
            return false;
        struct iv *v = containing(t, a);
        if (!v) {
            *out = a;
            return true;
        }
        struct iv *end = avoid ? IV(run_end(&v->n)) : v;
        if (end->hi >= hi)
            return false;
        a = end->hi + 1;
    }
}

static bool free_desc(const struct avl *t, ipam_u128 lo, ipam_u128 hi, bool avoid, ipam_u128 *out)
{
    ipam_u128 a = hi;
    for (;;) {
        if (avoid)
            a = skip_buggy_down(a);
        if (a < lo || a > hi)
            return false;
        struct iv *v = containing(t, a);
        if (!v) {
            *out = a;
            return true;
        }
        struct iv *start = v;
        if (avoid) {
            struct avl_node *p = prev_unbridged(&v->n);
            start = IV(p ? avl_next(p) : avl_first(t));
        }
        if (start->lo <= lo)
            return false;
        a = start->lo - 1;
    }
}

bool usedidx_first_free(const struct usedidx *u, const ipam_set *set, ipam_family f, bool desc,
                        bool avoid_buggy, ipam_u128 *out)
{
    for (size_t k = 0; k < set->n; k++) {
        const ipam_range *r = &set->r[desc ? set->n - 1 - k : k];
        if (ipam_family_of(r->lo) != f)
            continue;
        bool avoid = avoid_buggy && f == IPAM_FAMILY_V4;
        bool found = desc ? free_desc(&u->used, r->lo, r->hi, avoid, out)
                          : free_asc(&u->used, r->lo, r->hi, avoid, out);
        if (found)
            return true;
    }
    return false;
}
