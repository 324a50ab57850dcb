/* In-memory store backend shared by the core's unit tests and its fuzzer. */
#include "fake_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store fake;

static struct store *fake_open(const char *dir, char *err, size_t errlen)
{
    (void)dir;
    if (fake.open) {
        snprintf(err, errlen, "fake store is in use");
        return NULL;
    }
    fake.open = true;
    return &fake;
}

static int fake_load(struct store *s, const struct store_loader *l, uint64_t *revision, char *err,
                     size_t errlen)
{
    /* Pools first: leases name their pool. */
    const enum store_kind order[] = {STORE_POOL, STORE_LEASE};
    for (size_t k = 0; k < 2; k++)
        for (const struct fake_obj *o = s->objs; o; o = o->next)
            if (o->kind == order[k] &&
                l->object(l->ctx, o->kind, o->key, o->data, o->len, err, errlen) != 0)
                return -1;
    *revision = s->rev;
    return 0;
}

static struct fake_obj **fake_find(struct store *s, enum store_kind kind, const char *key)
{
    struct fake_obj **p = &s->objs;
    while (*p && !((*p)->kind == kind && strcmp((*p)->key, key) == 0))
        p = &(*p)->next;
    return p;
}

static void fake_obj_free(struct fake_obj *o)
{
    free(o->key);
    free(o->data);
    free(o);
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p)
        abort();
    return p;
}

static int fake_commit(struct store *s, uint64_t revision, const struct store_op *ops, size_t n,
                       char *err, size_t errlen)
{
    if (s->fail_next) {
        s->fail_next = false;
        s->failures++;
        snprintf(err, errlen, "injected commit failure");
        return -1;
    }
    if (revision <= s->rev) {
        fprintf(stderr, "fake store: commit of revision %llu after %llu\n",
                (unsigned long long)revision, (unsigned long long)s->rev);
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        struct fake_obj **p = fake_find(s, ops[i].kind, ops[i].key);
        if (ops[i].del) {
            struct fake_obj *o = *p;
            if (o) {
                *p = o->next;
                fake_obj_free(o);
            }
            continue;
        }
        if (!*p) {
            *p = xmalloc(sizeof(**p));
            (*p)->kind = ops[i].kind;
            (*p)->key = xmalloc(strlen(ops[i].key) + 1);
            memcpy((*p)->key, ops[i].key, strlen(ops[i].key) + 1);
        }
        free((*p)->data);
        (*p)->data = xmalloc(ops[i].len);
        if (ops[i].len)
            memcpy((*p)->data, ops[i].data, ops[i].len);
        (*p)->len = ops[i].len;
    }
    s->rev = revision;
    s->commits++;
    return 0;
}

static void fake_close(struct store *s)
{
    s->open = false;
}

const struct store_backend fake_backend = {
    .name = "fake",
    .open = fake_open,
    .load = fake_load,
    .commit = fake_commit,
    .close = fake_close,
};

size_t fake_count(void)
{
    size_t n = 0;
    for (const struct fake_obj *o = fake.objs; o; o = o->next)
        n++;
    return n;
}

void fake_reset(void)
{
    while (fake.objs) {
        struct fake_obj *o = fake.objs;
        fake.objs = o->next;
        fake_obj_free(o);
    }
    memset(&fake, 0, sizeof fake);
}
