/* Fuzz harness for address, block, list and set text (lib/addr.c, lib/ipset.c, lib/u128.c).
 *
 * Every input is used five ways: as one address (format(parse(x)) parses back
 * to the same value and formats identically), as one block (a CIDR is aligned
 * and its range formats back to the same block), as a comma-separated list
 * turned into a pool's set (sorted, disjoint, counts consistent, order of
 * blocks irrelevant, the set's text round-trips), as 16-byte values to format
 * (compared with glibc's inet_ntop, itself RFC 5952), and as a sequence of
 * binary set additions checked against a list of what was added. */
#include <arpa/inet.h>
#include <stdbool.h>

#include "fuzz.h"

#define FUZZ_MAX_INPUT 4096
#define MAX_OPS 64

static ipam_u128 load_u128(const uint8_t *p)
{
    ipam_u128 v = 0;
    for (int i = 0; i < 16; i++)
        v = v << 8 | p[i];
    return v;
}

static uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int popcount128(ipam_u128 v)
{
    return __builtin_popcountll((unsigned long long)v) +
           __builtin_popcountll((unsigned long long)(v >> 64));
}

/* An error buffer of exactly len bytes (NULL for 0), so that a write past
 * it is caught; filled with garbage to see that it gets terminated. */
static char *err_buf(size_t len)
{
    char *e;
    if (len == 0)
        return NULL;
    e = malloc(len);
    if (!e)
        abort();
    memset(e, 'x', len);
    return e;
}

static void check_formatted(ipam_u128 a)
{
    char buf[IPAM_ADDR_STRLEN], again[IPAM_ADDR_STRLEN];
    ipam_u128 b;

    ipam_addr_format(a, buf);
    FUZZ_ASSERT(strlen(buf) > 0 && strlen(buf) < IPAM_ADDR_STRLEN, "`%s'", buf);
    FUZZ_ASSERT(ipam_addr_parse(buf, strlen(buf), &b) == 0, "`%s' does not parse", buf);
    FUZZ_ASSERT(a == b, "`%s' parses to another address", buf);
    FUZZ_ASSERT(strcmp(ipam_addr_format(b, again), buf) == 0, "`%s' formats as `%s'", buf, again);
    /* glibc writes RFC 5952 text too, except that it gives addresses whose
     * first 96 bits are zero a dotted tail. */
    if (!ipam_is_v4(a) && (a >> 32) != 0) {
        unsigned char raw[16];
        char ref[INET6_ADDRSTRLEN];
        for (int i = 0; i < 16; i++)
            raw[i] = (unsigned char)(a >> (120 - 8 * i));
        FUZZ_ASSERT(inet_ntop(AF_INET6, raw, ref, sizeof ref) != NULL, "inet_ntop");
        FUZZ_ASSERT(strcmp(ref, buf) == 0, "formatted `%s', inet_ntop says `%s'", buf, ref);
    }
}

static void check_addr(const char *s, size_t len)
{
    ipam_u128 a;

    if (ipam_addr_parse(s, len, &a) != 0)
        return;
    FUZZ_ASSERT(memchr(s, '\0', len) == NULL, "an address with a NUL inside parsed");
    check_formatted(a);
}

static void check_u128(const char *s)
{
    char buf[IPAM_U128_STRLEN];
    ipam_u128 v, w;

    if (ipam_u128_parse(s, &v) != 0)
        return;
    ipam_u128_format(v, buf);
    FUZZ_ASSERT(buf[0] != '0' || buf[1] == '\0', "`%s' has a leading zero", buf);
    FUZZ_ASSERT(ipam_u128_parse(buf, &w) == 0 && v == w, "`%s' does not parse back", buf);
}

/* The range of a parsed block formats to text that parses to the same
 * block; a CIDR keeps its prefix. */
static void check_block(const char *s, size_t len, size_t errlen)
{
    char *err = err_buf(errlen), txt[IPAM_BLOCK_STRLEN];
    ipam_block b, c;
    int rc = ipam_block_parse(s, len, &b, err, errlen);

    FUZZ_ASSERT(rc == 0 || !err || memchr(err, '\0', errlen), "error message not terminated");
    FUZZ_ASSERT((ipam_block_parse(s, len, &c, NULL, 0) == 0) == (rc == 0), "err changes result");
    free(err);
    if (rc != 0)
        return;
    FUZZ_ASSERT(b.lo == c.lo && b.hi == c.hi && b.prefix == c.prefix, "parse is not stable");
    FUZZ_ASSERT(b.lo <= b.hi, "block starts after it ends");
    FUZZ_ASSERT(ipam_family_of(b.lo) == ipam_family_of(b.hi), "block mixes families");
    FUZZ_ASSERT(ipam_is_v4(b.lo) || b.hi < IPAM_V4_BASE || b.lo > (IPAM_V4_BASE | 0xffffffffu),
                "IPv6 block reaches into ::ffff:0:0/96");
    if (b.prefix >= 0) {
        int bits = ipam_is_v4(b.lo) ? 32 : 128;
        ipam_u128 m = b.hi - b.lo;
        FUZZ_ASSERT(b.prefix <= bits, "prefix %d", b.prefix);
        FUZZ_ASSERT((m & (m + 1)) == 0 && (b.lo & m) == 0, "CIDR /%d is not aligned", b.prefix);
        FUZZ_ASSERT(popcount128(m) == bits - b.prefix, "CIDR /%d has the wrong size", b.prefix);
    } else {
        FUZZ_ASSERT(b.prefix == -1, "prefix %d", b.prefix);
    }
    ipam_range_format((ipam_range){b.lo, b.hi}, txt);
    FUZZ_ASSERT(strlen(txt) < IPAM_BLOCK_STRLEN, "`%s'", txt);
    FUZZ_ASSERT(ipam_block_parse(txt, strlen(txt), &c, NULL, 0) == 0, "`%s' does not parse", txt);
    FUZZ_ASSERT(c.lo == b.lo && c.hi == b.hi, "`%s' is another block", txt);
    if (b.prefix >= 0)
        FUZZ_ASSERT(c.prefix == b.prefix, "`%s' lost prefix /%d", txt, b.prefix);
    check_formatted(b.lo);
    check_formatted(b.hi);
}

static bool is_list_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Every address of sub is in set. */
static void check_subset(const ipam_set *sub, const ipam_set *set)
{
    for (size_t i = 0; i < sub->n; i++) {
        size_t k = ipam_set_lower(set, sub->r[i].lo);
        FUZZ_ASSERT(k < set->n && set->r[k].lo <= sub->r[i].lo && sub->r[i].hi <= set->r[k].hi,
                    "range %zu is not in the larger set", i);
    }
}

static void check_set_from(char **v, size_t n, size_t errlen)
{
    ipam_set s, sk, again = IPAM_SET_INIT, byadd = IPAM_SET_INIT;
    char *err = err_buf(errlen);
    int rc = ipam_set_from_blocks((const char *const *)v, n, false, &s, err, errlen);
    int rck = ipam_set_from_blocks((const char *const *)v, n, true, &sk, NULL, 0);

    FUZZ_ASSERT(rc == 0 || !err || memchr(err, '\0', errlen), "error message not terminated");
    free(err);
    FUZZ_ASSERT(rc == rck, "skip_end_ips changes validity");
    if (rc != 0) {
        FUZZ_ASSERT(s.n == 0 && s.r == NULL && sk.n == 0 && sk.r == NULL, "failed set not empty");
        return;
    }
    fuzz_check_set(&s);
    fuzz_check_set(&sk);
    check_subset(&sk, &s);

    /* Each block is in the set, and the set is their union in any order. */
    for (size_t i = 0; i < n; i++) {
        ipam_block b;
        FUZZ_ASSERT(ipam_block_parse(v[i], strlen(v[i]), &b, NULL, 0) == 0, "`%s'", v[i]);
        FUZZ_ASSERT(ipam_set_contains(&s, b.lo) && ipam_set_contains(&s, b.hi), "`%s'", v[i]);
        FUZZ_ASSERT(ipam_set_add(&byadd, b.lo, b.hi) == 0, "out of memory");
    }
    FUZZ_ASSERT(ipam_set_equal(&s, &byadd), "set differs from the union of its blocks");
    ipam_set_free(&byadd);
    for (size_t i = 0; i < n / 2; i++) {
        char *t = v[i];
        v[i] = v[n - 1 - i];
        v[n - 1 - i] = t;
    }
    FUZZ_ASSERT(ipam_set_from_blocks((const char *const *)v, n, false, &again, NULL, 0) == 0,
                "reversed blocks refused");
    FUZZ_ASSERT(ipam_set_equal(&s, &again), "order of blocks changes the set");
    ipam_set_free(&again);

    /* skip_end_ips drops at most two addresses per block. */
    for (int f = 4; f <= 6; f += 2) {
        ipam_u128 all = ipam_set_count(&s, (ipam_family)f),
                  kept = ipam_set_count(&sk, (ipam_family)f);
        FUZZ_ASSERT(kept <= all && all - kept <= 2 * (ipam_u128)n, "skip_end_ips drops too much");
    }

    /* The set's own text builds the same set. */
    if (s.n > 0) {
        char **txt = calloc(s.n, sizeof(char *));
        FUZZ_ASSERT(txt != NULL, "out of memory");
        for (size_t i = 0; i < s.n; i++) {
            txt[i] = malloc(IPAM_BLOCK_STRLEN);
            FUZZ_ASSERT(txt[i] != NULL, "out of memory");
            ipam_range_format(s.r[i], txt[i]);
        }
        FUZZ_ASSERT(ipam_set_from_blocks((const char *const *)txt, s.n, false, &again, NULL, 0) ==
                        0,
                    "the set's text `%s'... is refused", txt[0]);
        FUZZ_ASSERT(ipam_set_equal(&s, &again), "the set's text is another set");
        ipam_set_free(&again);
        ipam_list_free(txt, s.n);
    }
    ipam_set_free(&s);
    ipam_set_free(&sk);
}

static void check_list(const char *str, size_t errlen)
{
    char **v = (char **)1, *err = err_buf(errlen);
    size_t n = 99, commas = 0;
    int rc = ipam_list_split(str, &v, &n, err, errlen);

    FUZZ_ASSERT(rc == 0 || !err || memchr(err, '\0', errlen), "error message not terminated");
    free(err);
    if (rc != 0) {
        FUZZ_ASSERT(v == NULL && n == 0, "failed split leaves output");
        return;
    }
    for (const char *c = str; *c; c++)
        commas += *c == ',';
    FUZZ_ASSERT(n == commas + 1, "%zu entries for %zu commas", n, commas);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(v[i]);
        FUZZ_ASSERT(len > 0, "empty entry %zu", i);
        FUZZ_ASSERT(!strchr(v[i], ','), "entry `%s' holds a comma", v[i]);
        FUZZ_ASSERT(!is_list_space(v[i][0]) && !is_list_space(v[i][len - 1]),
                    "entry `%s' is not trimmed", v[i]);
    }
    check_set_from(v, n, errlen);
    ipam_list_free(v, n);
}

/* Binary additions: each op picks a base near an interesting edge, an
 * offset and a length; the set must contain what was added and nothing
 * next to it that was not. */
static void check_adds(const uint8_t *p, size_t size)
{
    static const ipam_u128 bases[] = {
        0,
        IPAM_V4_BASE - 0x10000,
        IPAM_V4_BASE,
        IPAM_V4_BASE | 0xffff0000u,
        (ipam_u128)1 << 64,
        (ipam_u128)0x20010db8 << 96,
        ~(ipam_u128)0 - 0xffff,
    };
    ipam_range added[MAX_OPS];
    size_t nadded = 0;
    ipam_set s = IPAM_SET_INIT;

    for (; size >= 9 && nadded < MAX_OPS; p += 9, size -= 9) {
        ipam_u128 lo = bases[p[0] % (sizeof bases / sizeof bases[0])] + load_u32(p + 1);
        ipam_u128 hi = lo + (p[0] & 0x80 ? (ipam_u128)load_u32(p + 5) << 16 : load_u32(p + 5));
        if (p[0] & 0x40)
            hi = lo - 1 - (load_u32(p + 5) & 0xff); /* empty: adds nothing */
        FUZZ_ASSERT(ipam_set_add(&s, lo, hi) == 0, "out of memory");
        if (lo <= hi)
            added[nadded++] = (ipam_range){lo, hi};
        fuzz_check_set(&s);
        FUZZ_ASSERT(lo > hi || (ipam_set_contains(&s, lo) && ipam_set_contains(&s, hi)),
                    "add %zu is not in the set", nadded);
    }
    for (size_t i = 0; i < nadded; i++) {
        ipam_u128 probe[4] = {added[i].lo - 1, added[i].lo, added[i].hi, added[i].hi + 1};
        for (int k = 0; k < 4; k++) {
            bool in = false;
            for (size_t j = 0; j < nadded && !in; j++)
                in = added[j].lo <= probe[k] && probe[k] <= added[j].hi;
            FUZZ_ASSERT(ipam_set_contains(&s, probe[k]) == in, "probe %d of add %zu", k, i);
        }
    }
    ipam_set_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *str;
    size_t errlen;

    if (size > FUZZ_MAX_INPUT)
        return 0;
    str = fuzz_strdup(data, size);
    errlen = size % 97; /* 0 (no buffer) to 96 bytes, to catch overflows */

    check_addr((const char *)data, size);
    check_block((const char *)data, size, errlen);
    check_list(str, errlen);
    check_u128(str);
    for (size_t i = 0; i + 16 <= size && i < 256; i += 16)
        check_formatted(load_u128(data + i));
    check_adds(data, size);
    free(str);
    return 0;
}
