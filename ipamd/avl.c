/* Intrusive AVL tree: balanced ordered indexes without allocation. */
#include "avl.h"

static int height(const struct avl_node *n) { return n ? n->h : 0; }

static void fix(struct avl *t, struct avl_node *n)
{
    int hl = height(n->l), hr = height(n->r);
    n->h = 1 + (hl > hr ? hl : hr);
    if (t->update)
        t->update(n);
}

static void replace_child(struct avl *t, struct avl_node *parent, struct avl_node *old,
                          struct avl_node *new)
{
    if (!parent)
        t->root = new;
    else if (parent->l == old)
        parent->l = new;
    else
        parent->r = new;
    if (new)
        new->p = parent;
}

static struct avl_node *rotate_left(struct avl *t, struct avl_node *x)
{
    struct avl_node *y = x->r;
    x->r = y->l;
    if (y->l)
        y->l->p = x;
    replace_child(t, x->p, x, y);
    y->l = x;
    x->p = y;
    fix(t, x);
    fix(t, y);
    return y;
}

static struct avl_node *rotate_right(struct avl *t, struct avl_node *x)
{
    struct avl_node *y = x->l;
    x->l = y->r;
    if (y->r)
        y->r->p = x;
    replace_child(t, x->p, x, y);
    y->r = x;
    x->p = y;
    fix(t, x);
    fix(t, y);
    return y;
}

static struct avl_node *balance(struct avl *t, struct avl_node *n)
{
    fix(t, n);
    int bf = height(n->l) - height(n->r);
    if (bf > 1) {
        if (height(n->l->l) < height(n->l->r))
            rotate_left(t, n->l);
        return rotate_right(t, n);
    }
    if (bf < -1) {
        if (height(n->r->r) < height(n->r->l))
            rotate_right(t, n->r);
        return rotate_left(t, n);
    }
    return n;
}

/* Rebalances and refreshes aggregates from n up to the root. */
static void rebalance_up(struct avl *t, struct avl_node *n)
{
    while (n)
        n = balance(t, n)->p;
}

void avl_touch(struct avl *t, struct avl_node *n)
{
    for (; n; n = n->p)
        fix(t, n);
}

void avl_insert(struct avl *t, struct avl_node *n, avl_cmp_fn cmp)
{
    struct avl_node *p = NULL, **link = &t->root;
    while (*link) {
        p = *link;
        link = cmp(n, p) < 0 ? &p->l : &p->r;
    }
    n->l = n->r = NULL;
    n->p = p;
    n->h = 1;
    *link = n;
    t->count++;
    fix(t, n);
    rebalance_up(t, p);
}

void avl_remove(struct avl *t, struct avl_node *n)
{
    struct avl_node *start;
    t->count--;
    if (n->l && n->r) {
        /* Put the successor s, which has no left child, where n was. */
        struct avl_node *s = n->r;
        while (s->l)
            s = s->l;
        if (s->p == n) {
            start = s;
        } else {
            start = s->p;
            start->l = s->r;
            if (s->r)
                s->r->p = start;
            s->r = n->r;
            s->r->p = s;
        }
        s->l = n->l;
        s->l->p = s;
        s->h = n->h;
        replace_child(t, n->p, n, s);
    } else {
        start = n->p;
        replace_child(t, n->p, n, n->l ? n->l : n->r);
    }
    rebalance_up(t, start);
}

struct avl_node *avl_first(const struct avl *t)
{
    struct avl_node *n = t->root;
    while (n && n->l)
        n = n->l;
    return n;
}

struct avl_node *avl_last(const struct avl *t)
{
    struct avl_node *n = t->root;
    while (n && n->r)
        n = n->r;
    return n;
}

struct avl_node *avl_next(const struct avl_node *n)
{
    if (n->r) {
        n = n->r;
        while (n->l)
            n = n->l;
        return (struct avl_node *)n;
    }
    while (n->p && n->p->r == n)
        n = n->p;
    return n->p;
}

struct avl_node *avl_prev(const struct avl_node *n)
{
    if (n->l) {
        n = n->l;
        while (n->r)
            n = n->r;
        return (struct avl_node *)n;
    }
    while (n->p && n->p->l == n)
        n = n->p;
    return n->p;
}

struct avl_node *avl_find_ge(const struct avl *t, const void *key, avl_key_fn cmp)
{
    struct avl_node *n = t->root, *best = NULL;
    while (n) {
        if (cmp(key, n) <= 0) {
            best = n;
            n = n->l;
        } else {
            n = n->r;
        }
    }
    return best;
}

struct avl_node *avl_find_le(const struct avl *t, const void *key, avl_key_fn cmp)
{
    struct avl_node *n = t->root, *best = NULL;
    while (n) {
        if (cmp(key, n) >= 0) {
            best = n;
            n = n->r;
        } else {
            n = n->l;
        }
    }
    return best;
}

struct avl_node *avl_find(const struct avl *t, const void *key, avl_key_fn cmp)
{
    struct avl_node *n = avl_find_ge(t, key, cmp);
    return n && cmp(key, n) == 0 ? n : NULL;
}
