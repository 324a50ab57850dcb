/* ipamctl's allocation helpers, which exit instead of returning NULL. */
#include "cli_util.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/status.h>

_Noreturn void out_of_memory(void)
{
    fputs("ipamctl: out of memory\n", stderr);
    exit(GRPC_STATUS_RESOURCE_EXHAUSTED);
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size);
    if (p == NULL)
        out_of_memory();
    return p;
}

void *xreallocarray(void *p, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        out_of_memory();
    p = realloc(p, n * size == 0 ? 1 : n * size);
    if (p == NULL)
        out_of_memory();
    return p;
}

char *xprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        out_of_memory();
    return s;
}

char *xstrdup(const char *s)
{
    return xprintf("%s", s);
}

void *arena_calloc(arena *a, size_t n, size_t size)
{
    a->p = xreallocarray(a->p, a->n + 1, sizeof(*a->p));
    a->p[a->n] = xcalloc(n, size);
    return a->p[a->n++];
}

void arena_free(arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->p[i]);
    free(a->p);
    *a = (arena)ARENA_INIT;
}
