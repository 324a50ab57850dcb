/* Interval sets of addresses: one sorted array of merged ranges per set. */
#include "ipam/ipset.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ::ffff:255.255.255.255, the last IPv4-mapped address. */
#define V4_LAST (IPAM_V4_BASE | 0xffffffffu)

void ipam_set_free(ipam_set *s)
{
    free(s->r);
    *s = (ipam_set)IPAM_SET_INIT;
}

/* Makes room for extra more ranges, so that what follows cannot fail. */
static int reserve(ipam_set *s, size_t extra)
{
    size_t cap = s->cap ? s->cap : 8;
    ipam_range *r;

    if (s->n + extra <= s->cap)
        return 0;
    while (cap < s->n + extra) {
        if (cap > SIZE_MAX / 2 / sizeof *r)
            return -1;
        cap *= 2;
    }
    r = realloc(s->r, cap * sizeof *r);
    if (r == NULL)
        return -1;
    s->r = r;
    s->cap = cap;
    return 0;
}

size_t ipam_set_lower(const ipam_set *s, ipam_u128 a)
{
    size_t lo = 0, hi = s->n;

    /* Ranges are sorted and disjoint, so their ends are increasing. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->r[mid].hi < a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Index of the first range starting after a. */
static size_t upper(const ipam_set *s, ipam_u128 a)
{
    size_t lo = 0, hi = s->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->r[mid].lo <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool same_family(ipam_u128 a, ipam_u128 b)
{
    return ipam_family_of(a) == ipam_family_of(b);
}

/* Adds [lo, hi], which lies within one family, with room for one more range
 * already reserved. Neighbours merge only within a family, so every range
 * stays of one family and counts per family stay exact. */
static void add_one(ipam_set *s, ipam_u128 lo, ipam_u128 hi)
{
    size_t i = ipam_set_lower(s, lo), j = upper(s, hi);

    if (i > 0 && s->r[i - 1].hi + 1 == lo && same_family(lo, s->r[i - 1].hi))
        i--;
    if (j < s->n && hi + 1 == s->r[j].lo && same_family(hi, s->r[j].lo))
        j++;
    /* Ranges [i, j) overlap or touch [lo, hi] and collapse into one. */
    if (i == j) {
        memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof *s->r);
        s->r[i] = (ipam_range){lo, hi};
        s->n++;
        return;
    }
    if (s->r[i].lo < lo)
        lo = s->r[i].lo;
    if (s->r[j - 1].hi > hi)
        hi = s->r[j - 1].hi;
    s->r[i] = (ipam_range){lo, hi};
    memmove(&s->r[i + 1], &s->r[j], (s->n - j) * sizeof *s->r);
    s->n -= j - i - 1;
}

int ipam_set_add(ipam_set *s, ipam_u128 lo, ipam_u128 hi)
{
    if (lo > hi)
        return 0;
    /* A range crossing the IPv4-mapped space is split at its edges, so at
     * most three pieces; reserving first keeps the set unchanged on failure. */
    if (reserve(s, 3) != 0)
        return -1;
    if (lo < IPAM_V4_BASE)
        add_one(s, lo, hi < IPAM_V4_BASE ? hi : IPAM_V4_BASE - 1);
    if (lo <= V4_LAST && hi >= IPAM_V4_BASE)
        add_one(s, lo > IPAM_V4_BASE ? lo : IPAM_V4_BASE, hi < V4_LAST ? hi : V4_LAST);
    if (hi > V4_LAST)
        add_one(s, lo > V4_LAST ? lo : V4_LAST + 1, hi);
    return 0;
}

bool ipam_set_contains(const ipam_set *s, ipam_u128 a)
{
    size_t i = ipam_set_lower(s, a);

    return i < s->n && s->r[i].lo <= a;
}

ipam_u128 ipam_set_count(const ipam_set *s, ipam_family f)
{
    ipam_u128 n = 0;

    for (size_t i = 0; i < s->n; i++)
        if (ipam_family_of(s->r[i].lo) == f)
            n += s->r[i].hi - s->r[i].lo + 1;
    return n;
}

bool ipam_set_has_family(const ipam_set *s, ipam_family f)
{
    size_t i;

    if (s->n == 0)
        return false;
    if (f == IPAM_FAMILY_V6)
        return s->r[0].lo < IPAM_V4_BASE || s->r[s->n - 1].hi > V4_LAST;
    i = ipam_set_lower(s, IPAM_V4_BASE);
    return i < s->n && s->r[i].lo <= V4_LAST;
}

bool ipam_set_equal(const ipam_set *a, const ipam_set *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->r[i].lo != b->r[i].lo || a->r[i].hi != b->r[i].hi)
            return false;
    return true;
}

int ipam_set_from_blocks(const char *const *blocks, size_t n, bool skip_end_ips, ipam_set *out,
                         char *err, size_t errlen)
{
    ipam_set s = IPAM_SET_INIT;
    int rc = -1;

    *out = (ipam_set)IPAM_SET_INIT;
    for (size_t i = 0; i < n; i++) {
        const char *txt = blocks[i] != NULL ? blocks[i] : "";
        size_t len = strlen(txt);
        ipam_block b;

        if (ipam_block_parse(txt, len, &b, err, errlen) != 0)
            goto out;
        /* Network and broadcast addresses exist only in IPv4 subnets with
         * more than two addresses. */
        if (skip_end_ips && ipam_is_v4(b.lo) && b.prefix >= 0 && b.prefix < 31) {
            b.lo++;
            b.hi--;
        }
        if (ipam_set_add(&s, b.lo, b.hi) != 0) {
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    *out = s;
    s = (ipam_set)IPAM_SET_INIT;
    rc = 0;
out:
    ipam_set_free(&s);
    return rc;
}

static int popcount128(ipam_u128 v)
{
    return __builtin_popcountll((unsigned long long)v) +
           __builtin_popcountll((unsigned long long)(v >> 64));
}

char *ipam_range_format(ipam_range r, char *buf)
{
    char a[IPAM_ADDR_STRLEN], b[IPAM_ADDR_STRLEN];
    ipam_u128 m = r.hi - r.lo;

    /* One CIDR when the size is a power of two (m all ones) and lo is
     * aligned to it; m + 1 wraps to 0 for the whole IPv6 space, still a CIDR. */
    if (r.lo <= r.hi && same_family(r.lo, r.hi) && (m & (m + 1)) == 0 && (r.lo & m) == 0) {
        int bits = ipam_is_v4(r.lo) ? 32 : 128;
        snprintf(buf, IPAM_BLOCK_STRLEN, "%s/%d", ipam_addr_format(r.lo, a), bits - popcount128(m));
    } else {
        snprintf(buf, IPAM_BLOCK_STRLEN, "%s-%s", ipam_addr_format(r.lo, a),
                 ipam_addr_format(r.hi, b));
    }
    return buf;
}

/* The white space a list entry is trimmed of: what a line may end with and
 * what separates words, not the rarer \v and \f. */
static bool is_list_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void ipam_list_free(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int ipam_list_split(const char *list, char ***out, size_t *n, char *err, size_t errlen)
{
    const char *s = list != NULL ? list : "";
    size_t cap = 1, k = 0;
    char **v = NULL;
    int rc = -1, why = ENOMEM;

    *out = NULL;
    *n = 0;
    /* One entry more than there are commas. */
    for (const char *c = s; *c != '\0'; c++)
        cap += *c == ',';
    v = calloc(cap, sizeof *v);
    if (v == NULL)
        goto out;
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);

        while (len > 0 && is_list_space(*s)) {
            s++;
            len--;
        }
        while (len > 0 && is_list_space(s[len - 1]))
            len--;
        if (len == 0) {
            why = EINVAL;
            goto out;
        }
        v[k] = malloc(len + 1);
        if (v[k] == NULL)
            goto out;
        memcpy(v[k], s, len);
        v[k++][len] = '\0';
        if (comma == NULL)
            break;
        s = comma + 1;
    }
    *out = v;
    *n = k;
    v = NULL;
    rc = 0;
out:
    ipam_list_free(v, k);
    if (rc != 0) {
        if (err != NULL && errlen > 0 && why == EINVAL)
            snprintf(err, errlen, "empty entry in list `%s'", list != NULL ? list : "");
        else if (err != NULL && errlen > 0)
            snprintf(err, errlen, "out of memory");
        errno = why;
    }
    return rc;
}
