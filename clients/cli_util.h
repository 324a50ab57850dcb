/* ipamctl's allocation helpers: none returns NULL, every one exits with
 * RESOURCE_EXHAUSTED (after "ipamctl: out of memory") when memory runs out.
 * Whatever they return is the caller's to free(), except what an arena holds:
 * arena_free() releases that all at once. */
#ifndef IPAMCTL_CLI_UTIL_H
#define IPAMCTL_CLI_UTIL_H

#include <stddef.h>

_Noreturn void out_of_memory(void);
/* calloc; n or size 0 still gives a distinct pointer. */
void *xcalloc(size_t n, size_t size);
/* realloc of p to n elements of size, failing on overflow. */
void *xreallocarray(void *p, size_t n, size_t size);
__attribute__((format(printf, 1, 2))) char *xprintf(const char *fmt, ...);
char *xstrdup(const char *s);

/* Allocations that live as long as one request. Start with ARENA_INIT. */
typedef struct {
    void **p;
    size_t n;
} arena;

#define ARENA_INIT                                                                                 \
    {                                                                                              \
        NULL, 0                                                                                    \
    }

/* xcalloc, the memory belonging to a. */
void *arena_calloc(arena *a, size_t n, size_t size);
/* Frees everything of a and leaves it empty and reusable. */
void arena_free(arena *a);

#endif
