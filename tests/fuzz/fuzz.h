/* What every fuzz harness shares: the libFuzzer entry point and invariant checks.
 *
 * Each harness defines LLVMFuzzerTestOneInput, which must accept any bytes,
 * free everything it allocates and abort (FUZZ_ASSERT) when the code under
 * test breaks a documented invariant: a crash, a leak or an abort is a
 * finding. The same harness links either libFuzzer (clang, IPAM_FUZZ) or
 * replay_main.c, which runs it over a committed corpus under any compiler. */
#ifndef IPAM_TESTS_FUZZ_H
#define IPAM_TESTS_FUZZ_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ipam/addr.h"
#include "ipam/ipset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with the failed condition and a printf-style context. */
#define FUZZ_ASSERT(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A malloc'd NUL-terminated copy of the input (NULs inside are kept, so C
 * string functions see a prefix, as they would of such a file). */
static inline char *fuzz_strdup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Holds the input as a file for parsers that take a path: one memfd per
 * process, rewritten for each input, named by its /proc/self/fd path (a
 * fresh open of that path reads from the start). Returns the path. */
static inline const char *fuzz_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];

    if (fd < 0) {
        fd = memfd_create("fuzz-input", 0);
        FUZZ_ASSERT(fd >= 0, "memfd_create failed");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    FUZZ_ASSERT(ftruncate(fd, 0) == 0, "ftruncate failed");
    for (size_t off = 0; off < size;) {
        ssize_t n = pwrite(fd, data + off, size - off, (off_t)off);
        FUZZ_ASSERT(n > 0, "pwrite failed");
        off += (size_t)n;
    }
    return path;
}

/* Checks what ipset.h promises of every set: ranges non-empty, each of one
 * family, sorted and disjoint, neighbours of one family never adjacent;
 * counts and family queries agree with the ranges. */
static inline void fuzz_check_set(const ipam_set *s)
{
    ipam_u128 n4 = 0, n6 = 0;

    FUZZ_ASSERT(s->n <= s->cap || (s->n == 0 && s->r == NULL), "n %zu cap %zu", s->n, s->cap);
    for (size_t i = 0; i < s->n; i++) {
        ipam_range r = s->r[i];
        FUZZ_ASSERT(r.lo <= r.hi, "range %zu is empty", i);
        FUZZ_ASSERT(ipam_family_of(r.lo) == ipam_family_of(r.hi), "range %zu mixes families", i);
        if (ipam_is_v4(r.lo))
            n4 += r.hi - r.lo + 1;
        else
            n6 += r.hi - r.lo + 1;
        if (i > 0) {
            ipam_range p = s->r[i - 1];
            FUZZ_ASSERT(p.hi < r.lo, "ranges %zu and %zu overlap or are unsorted", i - 1, i);
            FUZZ_ASSERT(p.hi + 1 != r.lo || ipam_family_of(p.hi) != ipam_family_of(r.lo),
                        "ranges %zu and %zu are adjacent and not merged", i - 1, i);
        }
        FUZZ_ASSERT(ipam_set_contains(s, r.lo) && ipam_set_contains(s, r.hi),
                    "range %zu is not contained", i);
        FUZZ_ASSERT(ipam_set_lower(s, r.lo) == i && ipam_set_lower(s, r.hi) == i,
                    "lower of range %zu", i);
        if (r.lo > 0 && (i == 0 || s->r[i - 1].hi < r.lo - 1))
            FUZZ_ASSERT(!ipam_set_contains(s, r.lo - 1), "address before range %zu", i);
        if (r.hi < ~(ipam_u128)0 && (i + 1 == s->n || s->r[i + 1].lo > r.hi + 1))
            FUZZ_ASSERT(!ipam_set_contains(s, r.hi + 1), "address after range %zu", i);
    }
    FUZZ_ASSERT(ipam_set_count(s, IPAM_FAMILY_V4) == n4, "IPv4 count");
    FUZZ_ASSERT(ipam_set_count(s, IPAM_FAMILY_V6) == n6, "IPv6 count");
    FUZZ_ASSERT(ipam_set_has_family(s, IPAM_FAMILY_V4) == (n4 != 0), "has IPv4");
    FUZZ_ASSERT(ipam_set_has_family(s, IPAM_FAMILY_V6) == (n6 != 0), "has IPv6");
}

#endif
