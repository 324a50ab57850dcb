/* Size-class allocation for leases; see slab.h. */
#include "slab.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRAIN 16
#define NCLASS (SLAB_MAX / GRAIN)
#define BLOCK (1u << 20)

#ifndef SLAB_PASSTHROUGH
struct free_obj {
    struct free_obj *next;
};

static struct {
    struct free_obj *free[NCLASS + 1];
    char *cur;    /* the unused end of the newest block */
    size_t left;  /* bytes there */
    void *blocks; /* every block, linked through its first word */
} slab;
#endif

static void *zalloc_or_die(size_t n)
{
    void *p = calloc(1, n);
    if (!p) {
        fputs("ipamd: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *slab_alloc(size_t n)
{
#ifdef SLAB_PASSTHROUGH
    return zalloc_or_die(n);
#else
    if (n == 0 || n > SLAB_MAX)
        return zalloc_or_die(n ? n : 1);
    size_t c = (n + GRAIN - 1) / GRAIN, size = c * GRAIN;
    struct free_obj *f = slab.free[c];
    if (f) {
        slab.free[c] = f->next;
        memset(f, 0, size);
        return f;
    }
    if (slab.left < size) {
        /* The rest of the old block goes to the free lists, in the largest
         * classes that fit, so nothing is lost. */
        while (slab.left >= GRAIN) {
            size_t k = slab.left / GRAIN > NCLASS ? NCLASS : slab.left / GRAIN;
            struct free_obj *o = (struct free_obj *)slab.cur;
            o->next = slab.free[k];
            slab.free[k] = o;
            slab.cur += k * GRAIN;
            slab.left -= k * GRAIN;
        }
        /* malloc's own alignment is 16 on the platforms ipamd builds for. */
        char *b = zalloc_or_die(BLOCK);
        *(void **)b = slab.blocks;
        slab.blocks = b;
        slab.cur = b + GRAIN;
        slab.left = BLOCK - GRAIN;
    }
    void *p = slab.cur;
    slab.cur += size;
    slab.left -= size;
    return p; /* fresh block memory is zero */
#endif
}

void slab_free(void *p, size_t n)
{
    if (!p)
        return;
#ifdef SLAB_PASSTHROUGH
    (void)n;
    free(p);
#else
    if (n == 0 || n > SLAB_MAX) {
        free(p);
        return;
    }
    size_t c = (n + GRAIN - 1) / GRAIN;
    struct free_obj *o = p;
    o->next = slab.free[c];
    slab.free[c] = o;
#endif
}
