/* Leases' memory: size classes of 16 bytes carved from 1 MiB blocks, with a
 * free list per class. Compared with malloc, an object costs no header, and
 * the short-lived allocations of request handling never sit between leases
 * and leave holes: millions of leases are most of ipamd's memory.
 *
 * One thread uses it (the core's). Blocks are never returned: freed objects
 * are reused by the next ones of their class. Objects over SLAB_MAX bytes,
 * and every object in sanitizer builds (so AddressSanitizer sees each one),
 * come from malloc. Out of memory aborts. */
#ifndef IPAMD_SLAB_H
#define IPAMD_SLAB_H

#include <stddef.h>

#define SLAB_MAX 1024

/* Defined in sanitizer builds (GCC's and clang's ways of saying so), where
 * every object comes from malloc and nothing is reused by the slab. */
#if defined(__SANITIZE_ADDRESS__)
#define SLAB_PASSTHROUGH 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_PASSTHROUGH 1
#endif
#endif

/* n bytes, zeroed, 16-byte aligned; slab_free needs the same n back. */
void *slab_alloc(size_t n);
void slab_free(void *p, size_t n);

#endif
