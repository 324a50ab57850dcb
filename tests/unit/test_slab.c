/* The lease allocator (ipamd/slab.c): objects are zeroed, 16-byte aligned,
 * never overlap, and freed ones are reused by their class. AddressSanitizer
 * builds pass every object to malloc (so ASan sees each one): this test is
 * what checks the size classes themselves, in the ordinary build. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "slab.h"

#define N 20000

struct obj {
    unsigned char *p;
    size_t n;
    unsigned char tag;
};

static bool intact(const struct obj *o)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->p[i] != o->tag)
            return false;
    return true;
}

static bool zeroed(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

int main(void)
{
    static struct obj objs[N];
    uint32_t seed = 12345;
    size_t live = 0;

    /* Random sizes across every class (and past SLAB_MAX, to malloc), freed
     * and reallocated at random: every live object keeps its own bytes. */
    for (int round = 0; round < 200000; round++) {
        seed = seed * 1103515245u + 12345u;
        size_t k = (seed >> 8) % N;
        struct obj *o = &objs[k];
        if (o->p) {
            if (!CHECK_MSG(intact(o), "object %zu (%zu bytes) was overwritten", k, o->n))
                break;
            slab_free(o->p, o->n);
            o->p = NULL;
            live--;
            continue;
        }
        o->n = 1 + (seed >> 16) % (SLAB_MAX + 200);
        o->p = slab_alloc(o->n);
        o->tag = (unsigned char)(1 + k % 255);
        if (!CHECK_MSG(o->p != NULL && ((uintptr_t)o->p & 15) == 0, "allocation of %zu bytes",
                       o->n))
            break;
        if (!CHECK_MSG(zeroed(o->p, o->n), "a %zu-byte object came back dirty", o->n))
            break;
        for (size_t i = 0; i < o->n; i++)
            o->p[i] = o->tag;
        live++;
    }
    size_t bad = 0;
    for (size_t k = 0; k < N; k++)
        if (objs[k].p && !intact(&objs[k]))
            bad++;
    CHECK_MSG(bad == 0, "%zu live objects overwritten", bad);
    CHECK(live > 0);

    /* A freed object is what the next one of its class gets. */
    void *a = slab_alloc(200);
    slab_free(a, 200);
    void *b = slab_alloc(193); /* same 16-byte class as 200 */
#ifndef SLAB_PASSTHROUGH
    CHECK(a == b);
#else
    CHECK(b != NULL);
#endif
    slab_free(b, 193);

    for (size_t k = 0; k < N; k++)
        slab_free(objs[k].p, objs[k].n);
    return check_summary();
}
