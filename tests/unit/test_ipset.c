/* Unit tests for interval sets: merging, lookups, counts, range text and kube-vip pool vectors. */
#include "ipam/ipset.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Parses an address the table holds; a typo in the table fails a check. */
static ipam_u128 addr(const char *s)
{
    ipam_u128 a = 0;

    CHECK_MSG(ipam_addr_parse(s, strlen(s), &a) == 0, "table address `%s'", s);
    return a;
}

/* Builds a set from a comma-separated pool value, as a ConfigMap gives it.
 * The tables hold valid lists: what the splitter refuses never reaches
 * ipam_set_from_blocks this way (raw_pools hands it such entries directly). */
static int from_list(const char *list, bool skip, ipam_set *out, char *err, size_t errlen)
{
    char **v = NULL;
    size_t n = 0;
    int rc;

    *out = (ipam_set)IPAM_SET_INIT;
    if (!CHECK_MSG(ipam_list_split(list, &v, &n, err, errlen) == 0, "table list `%s': %s", list,
                   err))
        return -1;
    rc = ipam_set_from_blocks((const char *const *)v, n, skip, out, err, errlen);
    ipam_list_free(v, n);
    return rc;
}

/* The set's ranges, formatted and joined by ','. */
static const char *set_text(const ipam_set *s, char *buf, size_t len)
{
    char r[IPAM_BLOCK_STRLEN];
    size_t pos = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < s->n && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%s", i ? "," : "",
                                ipam_range_format(s->r[i], r));
    return buf;
}

#define V6_MAX "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

/* Ranges added in order, then the set's text. */
static const struct {
    const char *add[6][2];
    const char *want;
} adds[] = {
    {{{"192.0.2.10", "192.0.2.12"}, {"192.0.2.14", "192.0.2.15"}},
     "192.0.2.10-192.0.2.12,192.0.2.14/31"},
    {{{"192.0.2.14", "192.0.2.15"}, {"192.0.2.10", "192.0.2.12"}},
     "192.0.2.10-192.0.2.12,192.0.2.14/31"},
    {{{"192.0.2.10", "192.0.2.12"}, {"192.0.2.13", "192.0.2.13"}}, "192.0.2.10-192.0.2.13"},
    {{{"192.0.2.13", "192.0.2.13"}, {"192.0.2.10", "192.0.2.12"}}, "192.0.2.10-192.0.2.13"},
    {{{"192.0.2.10", "192.0.2.12"}, {"192.0.2.11", "192.0.2.20"}}, "192.0.2.10-192.0.2.20"},
    {{{"192.0.2.10", "192.0.2.11"},
      {"192.0.2.14", "192.0.2.15"},
      {"192.0.2.18", "192.0.2.19"},
      {"192.0.2.30", "192.0.2.30"},
      {"192.0.2.12", "192.0.2.17"}},
     "192.0.2.10-192.0.2.19,192.0.2.30/32"},
    {{{"192.0.2.10", "192.0.2.20"}, {"192.0.2.12", "192.0.2.13"}}, "192.0.2.10-192.0.2.20"},
    {{{"192.0.2.12", "192.0.2.13"}, {"192.0.2.10", "192.0.2.20"}}, "192.0.2.10-192.0.2.20"},
    {{{"192.0.2.10", "192.0.2.12"}, {"192.0.2.10", "192.0.2.12"}}, "192.0.2.10-192.0.2.12"},
    {{{"192.0.2.1", "192.0.2.1"},
      {"192.0.2.5", "192.0.2.5"},
      {"192.0.2.3", "192.0.2.3"},
      {"192.0.2.2", "192.0.2.2"},
      {"192.0.2.4", "192.0.2.4"}},
     "192.0.2.1-192.0.2.5"},
    {{{"192.0.2.0", "192.0.2.127"}, {"192.0.2.128", "192.0.2.255"}}, "192.0.2.0/24"},
    {{{"::", "::"}, {V6_MAX, V6_MAX}}, "::/128," V6_MAX "/128"},
    {{{"::1", "::1"}, {"::", "::"}}, "::/127"},
    {{{"2001:db8::", "2001:db8::ffff"}, {"192.0.2.0", "192.0.2.255"}, {"::1", "::1"}},
     "::1/128,192.0.2.0/24,2001:db8::/112"},
    /* The whole IPv6 space is split around the IPv4-mapped space. */
    {{{"::", V6_MAX}}, "::-::fffe:ffff:ffff,0.0.0.0/0,::1:0:0:0-" V6_MAX},
    /* Numerically adjacent ranges of different families never merge. */
    {{{"::fffe:ffff:ffff", "::fffe:ffff:ffff"}, {"0.0.0.0", "0.0.0.0"}},
     "::fffe:ffff:ffff/128,0.0.0.0/32"},
    {{{"255.255.255.255", "255.255.255.255"}, {"::1:0:0:0", "::1:0:0:0"}},
     "255.255.255.255/32,::1:0:0:0/128"},
    {{{"192.0.2.12", "192.0.2.10"}}, ""},
};

static void test_add(void)
{
    char buf[512];

    for (size_t i = 0; i < N(adds); i++) {
        ipam_set s = IPAM_SET_INIT;

        for (size_t k = 0; k < N(adds[i].add) && adds[i].add[k][0] != NULL; k++)
            CHECK(ipam_set_add(&s, addr(adds[i].add[k][0]), addr(adds[i].add[k][1])) == 0);
        CHECK_EQ_STR(set_text(&s, buf, sizeof buf), adds[i].want);
        ipam_set_free(&s);
        CHECK(s.r == NULL && s.n == 0 && s.cap == 0);
    }
}

/* Many ranges in a scrambled order grow the array and stay sorted; filling the
 * gaps collapses them into one. */
static void test_add_many(void)
{
    ipam_set s = IPAM_SET_INIT;
    const uint32_t n = 1000, base = 0x0a000000;
    bool sorted = true;

    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (k * 389) % n; /* 389 is prime to 1000: a permutation */
        CHECK(ipam_set_add(&s, ipam_v4(base + 2 * i), ipam_v4(base + 2 * i)) == 0);
    }
    CHECK_EQ_INT(s.n, n);
    for (size_t i = 1; i < s.n; i++)
        sorted = sorted && s.r[i - 1].hi + 1 < s.r[i].lo;
    CHECK(sorted);
    CHECK(ipam_set_count(&s, IPAM_FAMILY_V4) == n);
    for (uint32_t k = 0; k + 1 < n; k++) {
        uint32_t i = (k * 389) % (n - 1);
        CHECK(ipam_set_add(&s, ipam_v4(base + 2 * i + 1), ipam_v4(base + 2 * i + 1)) == 0);
    }
    CHECK_EQ_INT(s.n, 1);
    CHECK(s.n == 1 && s.r[0].lo == ipam_v4(base) && s.r[0].hi == ipam_v4(base + 2 * n - 2));
    ipam_set_free(&s);
}

/* Random adds in a small space against a plain bitmap model: after every add
 * the set holds exactly the model's addresses, as merged sorted ranges. */
static void test_add_model(void)
{
    enum { SPACE = 96, ROUNDS = 200, ADDS = 12 };
    uint32_t seed = 12345;
    int bad = 0;

    for (int round = 0; round < ROUNDS; round++) {
        ipam_set s = IPAM_SET_INIT;
        bool model[SPACE] = {false};

        for (int k = 0; k < ADDS; k++) {
            uint32_t lo, len, count = 0;

            seed = seed * 1103515245u + 12345u;
            lo = (seed >> 8) % SPACE;
            seed = seed * 1103515245u + 12345u;
            len = (seed >> 8) % 6;
            if (lo + len >= SPACE)
                len = SPACE - 1 - lo;
            for (uint32_t a = lo; a <= lo + len; a++)
                model[a] = true;
            if (ipam_set_add(&s, ipam_v4(lo), ipam_v4(lo + len)) != 0)
                bad++;
            for (uint32_t a = 0; a < SPACE; a++) {
                count += model[a];
                if (ipam_set_contains(&s, ipam_v4(a)) != model[a])
                    bad++;
            }
            if (ipam_set_count(&s, IPAM_FAMILY_V4) != count)
                bad++;
            for (size_t i = 1; i < s.n; i++)
                if (s.r[i - 1].hi + 1 >= s.r[i].lo)
                    bad++;
        }
        ipam_set_free(&s);
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_lookup(void)
{
    ipam_set s = IPAM_SET_INIT, t = IPAM_SET_INIT;
    static const struct {
        uint32_t a;
        size_t lower;
        bool in;
    } cases[] = {
        {9, 0, false},  {10, 0, true}, {11, 0, true}, {12, 0, true},  {13, 1, false},
        {19, 1, false}, {20, 1, true}, {21, 1, true}, {22, 2, false}, {0, 0, false},
    };

    CHECK(ipam_set_lower(&s, 5) == 0);
    CHECK(!ipam_set_contains(&s, 5));
    CHECK(!ipam_set_has_family(&s, IPAM_FAMILY_V4));
    CHECK(!ipam_set_has_family(&s, IPAM_FAMILY_V6));
    CHECK(ipam_set_count(&s, IPAM_FAMILY_V4) == 0);
    CHECK(ipam_set_equal(&s, &t));

    CHECK(ipam_set_add(&s, ipam_v4(20), ipam_v4(21)) == 0);
    CHECK(ipam_set_add(&s, ipam_v4(10), ipam_v4(12)) == 0);
    for (size_t i = 0; i < N(cases); i++) {
        CHECK_MSG(ipam_set_lower(&s, ipam_v4(cases[i].a)) == cases[i].lower, "lower(0.0.0.%u)",
                  cases[i].a);
        CHECK_MSG(ipam_set_contains(&s, ipam_v4(cases[i].a)) == cases[i].in, "contains(0.0.0.%u)",
                  cases[i].a);
    }
    CHECK(ipam_set_lower(&s, 1) == 0);
    CHECK(ipam_set_lower(&s, ~(ipam_u128)0) == 2);
    CHECK(ipam_set_has_family(&s, IPAM_FAMILY_V4));
    CHECK(!ipam_set_has_family(&s, IPAM_FAMILY_V6));
    CHECK(ipam_set_count(&s, IPAM_FAMILY_V4) == 5);
    CHECK(ipam_set_count(&s, IPAM_FAMILY_V6) == 0);

    CHECK(!ipam_set_equal(&s, &t));
    CHECK(ipam_set_add(&t, ipam_v4(10), ipam_v4(11)) == 0);
    CHECK(ipam_set_add(&t, ipam_v4(20), ipam_v4(21)) == 0);
    CHECK(!ipam_set_equal(&s, &t));
    CHECK(ipam_set_add(&t, ipam_v4(12), ipam_v4(12)) == 0);
    CHECK(ipam_set_equal(&s, &t));

    CHECK(ipam_set_add(&t, 1, 1) == 0);
    CHECK(ipam_set_has_family(&t, IPAM_FAMILY_V6));
    CHECK(ipam_set_count(&t, IPAM_FAMILY_V6) == 1);
    CHECK(ipam_set_count(&t, IPAM_FAMILY_V4) == 5);
    ipam_set_free(&t);
    CHECK(ipam_set_add(&t, ~(ipam_u128)0, ~(ipam_u128)0) == 0);
    CHECK(ipam_set_has_family(&t, IPAM_FAMILY_V6));
    CHECK(!ipam_set_has_family(&t, IPAM_FAMILY_V4));
    ipam_set_free(&t);
    ipam_set_free(&s);
}

static const struct {
    const char *lo, *hi, *want;
} range_texts[] = {
    {"192.0.2.0", "192.0.2.255", "192.0.2.0/24"},
    {"192.0.2.1", "192.0.2.1", "192.0.2.1/32"},
    {"192.0.2.1", "192.0.2.2", "192.0.2.1-192.0.2.2"},
    {"192.0.2.2", "192.0.2.3", "192.0.2.2/31"},
    {"192.0.2.0", "192.0.2.2", "192.0.2.0-192.0.2.2"},
    {"192.0.2.4", "192.0.2.11", "192.0.2.4-192.0.2.11"},
    {"0.0.0.0", "255.255.255.255", "0.0.0.0/0"},
    {"10.0.0.0", "10.255.255.255", "10.0.0.0/8"},
    {"192.168.0.253", "192.168.1.2", "192.168.0.253-192.168.1.2"},
    {"2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"},
    {"::1", "::1", "::1/128"},
    {"::", V6_MAX, "::/0"},
    {"8000::", V6_MAX, "8000::/1"},
    {"fe80::ffff", "fe80::1:3", "fe80::ffff-fe80::1:3"},
    {"fe80::10", "fe80::13", "fe80::10/126"},
};

static void test_range_format(void)
{
    char buf[IPAM_BLOCK_STRLEN];

    for (size_t i = 0; i < N(range_texts); i++) {
        ipam_range r = {addr(range_texts[i].lo), addr(range_texts[i].hi)};
        CHECK_EQ_STR(ipam_range_format(r, buf), range_texts[i].want);
    }
    /* The longest text fits. */
    CHECK(strlen(ipam_range_format(
              (ipam_range){addr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), addr(V6_MAX)}, buf)) <
          IPAM_BLOCK_STRLEN);
    CHECK(strlen(ipam_range_format(
              (ipam_range){addr("1111:1111:1111:1111:1111:1111:1111:1111"), addr(V6_MAX)}, buf)) ==
          79);
}

/* conformance/kube-vip.md, "Vectors: building pools", then a few more of the
 * same kind. The expected set is every address listed. */
static const struct {
    const char *input;
    bool skip;
    const char *want;
} pools[] = {
    {"192.168.0.10-192.168.0.10", false, "192.168.0.10"},
    {"192.168.0.10-192.168.0.12", false, "192.168.0.10 192.168.0.11 192.168.0.12"},
    {"192.168.0.253-192.168.1.2", false,
     "192.168.0.253 192.168.0.254 192.168.0.255 192.168.1.0 192.168.1.1 192.168.1.2"},
    {"192.168.0.10-192.168.0.11,192.168.1.20-192.168.1.21", false,
     "192.168.0.10 192.168.0.11 192.168.1.20 192.168.1.21"},
    {"192.168.0.10-192.168.0.11,192.168.0.10-192.168.0.13", false,
     "192.168.0.10 192.168.0.11 192.168.0.12 192.168.0.13"},
    {"fe80::13-fe80::14", false, "fe80::13 fe80::14"},
    {"fe80::ffff-fe80::1:3", false, "fe80::ffff fe80::1:0 fe80::1:1 fe80::1:2 fe80::1:3"},
    {"fe80::10-fe80::12,fe80::10-fe80::14", false, "fe80::10 fe80::11 fe80::12 fe80::13 fe80::14"},
    {"192.168.0.200/32", false, "192.168.0.200"},
    {"192.168.0.200/32", true, "192.168.0.200"},
    {"192.168.0.200/30", false, "192.168.0.200 192.168.0.201 192.168.0.202 192.168.0.203"},
    {"192.168.0.200/30", true, "192.168.0.201 192.168.0.202"},
    {"192.168.0.200/31", true, "192.168.0.200 192.168.0.201"},
    {"192.168.0.200/30,192.168.0.200/29", false,
     "192.168.0.200 192.168.0.201 192.168.0.202 192.168.0.203 192.168.0.204 192.168.0.205 "
     "192.168.0.206 192.168.0.207"},
    {"192.168.0.200/30,192.168.0.200/29", true,
     "192.168.0.201 192.168.0.202 192.168.0.203 192.168.0.204 192.168.0.205 192.168.0.206"},
    {"fe80::10/127,fe80::fe/127", false, "fe80::10 fe80::11 fe80::fe fe80::ff"},
    {"fe80::10/126,fe80::12/127", false, "fe80::10 fe80::11 fe80::12 fe80::13"},
    /* skip-end-ips leaves ranges, IPv6 and /31 alone. */
    {"192.168.0.200/31", false, "192.168.0.200 192.168.0.201"},
    {"192.168.0.10-192.168.0.12", true, "192.168.0.10 192.168.0.11 192.168.0.12"},
    {"192.168.0.0-192.168.0.3", true, "192.168.0.0 192.168.0.1 192.168.0.2 192.168.0.3"},
    {"fe80::10/126", true, "fe80::10 fe80::11 fe80::12 fe80::13"},
    {"192.168.0.200/30,192.168.0.204-192.168.0.205", true,
     "192.168.0.201 192.168.0.202 192.168.0.204 192.168.0.205"},
    /* Host bits are masked. */
    {"192.168.0.255/30", false, "192.168.0.252 192.168.0.253 192.168.0.254 192.168.0.255"},
    {"2001::49fe/127", false, "2001::49fe 2001::49ff"},
    /* White space around entries and around '-' is tolerated. */
    {" 192.168.0.200/31 , 192.168.0.10 - 192.168.0.11\t", false,
     "192.168.0.10 192.168.0.11 192.168.0.200 192.168.0.201"},
};

static void test_pools(void)
{
    char err[160];

    for (size_t i = 0; i < N(pools); i++) {
        ipam_set got = IPAM_SET_INIT, want = IPAM_SET_INIT;
        char list[256], *save = NULL;
        size_t count = 0;

        err[0] = '\0';
        if (!CHECK_MSG(from_list(pools[i].input, pools[i].skip, &got, err, sizeof err) == 0,
                       "pool `%s': %s", pools[i].input, err))
            continue;
        snprintf(list, sizeof list, "%s", pools[i].want);
        for (char *a = strtok_r(list, " ", &save); a != NULL; a = strtok_r(NULL, " ", &save)) {
            ipam_u128 v = addr(a);
            CHECK_MSG(ipam_set_contains(&got, v), "pool `%s'%s holds %s", pools[i].input,
                      pools[i].skip ? " (skip)" : "", a);
            CHECK(ipam_set_add(&want, v, v) == 0);
            count++;
        }
        CHECK_MSG(ipam_set_equal(&got, &want), "pool `%s'%s is exactly {%s}", pools[i].input,
                  pools[i].skip ? " (skip)" : "", pools[i].want);
        CHECK_MSG(ipam_set_count(&got, IPAM_FAMILY_V4) + ipam_set_count(&got, IPAM_FAMILY_V6) ==
                      count,
                  "pool `%s' counts %zu", pools[i].input, count);
        ipam_set_free(&got);
        ipam_set_free(&want);
    }
}

/* Counts come from range arithmetic, so huge blocks are as cheap as small ones. */
static void test_counts(void)
{
    char err[160], buf[IPAM_U128_STRLEN];
    ipam_set s = IPAM_SET_INIT;

    CHECK(from_list("2001:db8::/64", false, &s, err, sizeof err) == 0);
    CHECK_EQ_STR(ipam_u128_format(ipam_set_count(&s, IPAM_FAMILY_V6), buf), "18446744073709551616");
    CHECK(ipam_set_count(&s, IPAM_FAMILY_V4) == 0);
    CHECK(!ipam_set_has_family(&s, IPAM_FAMILY_V4));
    ipam_set_free(&s);

    CHECK(from_list("2001:db8::/32", false, &s, err, sizeof err) == 0);
    CHECK_EQ_STR(ipam_u128_format(ipam_set_count(&s, IPAM_FAMILY_V6), buf),
                 "79228162514264337593543950336");
    ipam_set_free(&s);

    CHECK(from_list("10.0.0.0/8", true, &s, err, sizeof err) == 0);
    CHECK(ipam_set_count(&s, IPAM_FAMILY_V4) == 16777214);
    ipam_set_free(&s);

    CHECK(from_list("0.0.0.0/0", false, &s, err, sizeof err) == 0);
    CHECK(ipam_set_count(&s, IPAM_FAMILY_V4) == (ipam_u128)1 << 32);
    ipam_set_free(&s);

    CHECK(from_list("192.0.2.0/24,2001:db8::/120", false, &s, err, sizeof err) == 0);
    CHECK(ipam_set_count(&s, IPAM_FAMILY_V4) == 256);
    CHECK(ipam_set_count(&s, IPAM_FAMILY_V6) == 256);
    CHECK(ipam_set_has_family(&s, IPAM_FAMILY_V4));
    CHECK(ipam_set_has_family(&s, IPAM_FAMILY_V6));
    CHECK_EQ_INT(s.n, 2);
    ipam_set_free(&s);

    /* Low IPv6 blocks on either side of the IPv4-mapped space are fine. */
    CHECK(from_list("::/96,::1:0:0/96", false, &s, err, sizeof err) == 0);
    CHECK(ipam_set_count(&s, IPAM_FAMILY_V6) == (ipam_u128)1 << 33);
    ipam_set_free(&s);
    CHECK(from_list("8000::/1", false, &s, err, sizeof err) == 0);
    CHECK_EQ_STR(ipam_u128_format(ipam_set_count(&s, IPAM_FAMILY_V6), buf),
                 "170141183460469231731687303715884105728");
    ipam_set_free(&s);

    /* No entries: an empty set, not an error. */
    CHECK(ipam_set_from_blocks(NULL, 0, false, &s, err, sizeof err) == 0 && s.n == 0);
    ipam_set_free(&s);
}

/* One bad entry fails the whole pool and the message quotes it. */
static const struct {
    const char *input, *err;
} bad_pools[] = {
    {"192.0.2.0/24,300.1.1.1/24,2001:db8::/64",
     "invalid address `300.1.1.1' in block `300.1.1.1/24'"},
    {"192.0.2.0/24, 192.0.2.9-192.0.2.1 ", "range `192.0.2.9-192.0.2.1' starts after it ends"},
    {"192.0.2.1-2001:db8::1", "range `192.0.2.1-2001:db8::1' mixes IPv4 and IPv6"},
    {"10.0.0.0/8,192.0.2.0/33", "prefix length `33' out of range in block `192.0.2.0/33'"},
    {"::/0", "IPv6 block `::/0' overlaps the IPv4-mapped range ::ffff:0:0/96"},
    {"2001:db8::/64, ::/64 ", "IPv6 block `::/64' overlaps the IPv4-mapped range ::ffff:0:0/96"},
    {"::fffe:ffff:ffff-::1:0:0:0",
     "IPv6 block `::fffe:ffff:ffff-::1:0:0:0' overlaps the IPv4-mapped range ::ffff:0:0/96"},
    {"::ffff:192.0.2.0/120", "invalid address `::ffff:192.0.2.0' in block `::ffff:192.0.2.0/120'"},
    {"192.0.2.0/24,192.0.2.7", "block `192.0.2.7' is neither a CIDR (addr/prefix) nor a range "
                               "(start-end)"},
};

static void test_bad_pools(void)
{
    char err[160];

    for (size_t i = 0; i < N(bad_pools); i++) {
        ipam_set s = IPAM_SET_INIT;

        err[0] = '\0';
        CHECK_MSG(from_list(bad_pools[i].input, false, &s, err, sizeof err) == -1,
                  "pool `%s' must fail", bad_pools[i].input);
        CHECK_MSG(s.n == 0 && s.r == NULL, "failed pool `%s' leaves the set empty",
                  bad_pools[i].input);
        CHECK_EQ_STR(err, bad_pools[i].err);
        ipam_set_free(&s);
    }
    /* Just below and just above the IPv4-mapped space are fine. */
    {
        ipam_set s = IPAM_SET_INIT;
        CHECK(from_list("::fffe:0:0/96,::1:0:0:0/96", false, &s, err, sizeof err) == 0);
        CHECK_EQ_INT(s.n, 2);
        ipam_set_free(&s);
    }
}

/* ApplyPool's blocks reach ipam_set_from_blocks as they were sent, not split
 * from a list: it trims each entry itself and refuses an empty one. */
static const struct {
    const char *blocks[3];
    size_t n;
    const char *want; /* the set's text, or the error when err is set */
    bool err;
} raw_pools[] = {
    {{" 192.168.0.200/31 ", " 192.168.0.10 - 192.168.0.11\t"},
     2,
     "192.168.0.10/31,192.168.0.200/31",
     false},
    {{"192.0.2.0/24", "", "10.0.0.0/8"}, 3, "empty block", true},
    {{"192.0.2.0/24", " \t"}, 2, "empty block", true},
    {{"192.0.2.0/24", NULL}, 2, "empty block", true},
    {{"2001:db8::/64", " ::/64 "},
     2,
     "IPv6 block `::/64' overlaps the IPv4-mapped range ::ffff:0:0/96",
     true},
};

static void test_raw_pools(void)
{
    char err[160], buf[512];

    for (size_t i = 0; i < N(raw_pools); i++) {
        ipam_set s = IPAM_SET_INIT;
        int rc;

        err[0] = '\0';
        rc = ipam_set_from_blocks(raw_pools[i].blocks, raw_pools[i].n, false, &s, err, sizeof err);
        if (raw_pools[i].err) {
            CHECK_MSG(rc == -1 && s.n == 0 && s.r == NULL, "row %zu must fail", i);
            CHECK_EQ_STR(err, raw_pools[i].want);
        } else {
            CHECK_MSG(rc == 0, "row %zu: %s", i, err);
            CHECK_EQ_STR(set_text(&s, buf, sizeof buf), raw_pools[i].want);
        }
        ipam_set_free(&s);
    }
}

/* Lists split into entries trimmed of spaces, tabs, CR and LF; n == 0 means
 * the list has an empty entry and is refused whole. */
static const struct {
    const char *list;
    size_t n;
    const char *want[4];
} lists[] = {
    {"192.0.2.0/24", 1, {"192.0.2.0/24"}},
    {"a,b,c", 3, {"a", "b", "c"}},
    {" a , b\t,\tc ", 3, {"a", "b", "c"}},
    {"192.0.2.0/24, 198.51.100.10-198.51.100.20\r\n",
     2,
     {"192.0.2.0/24", "198.51.100.10-198.51.100.20"}},
    {" \t x \r\n", 1, {"x"}},
    /* White space inside an entry is the entry's. */
    {"a b , c\td", 2, {"a b", "c\td"}},
    {"192.168.0.10 - 192.168.0.11", 1, {"192.168.0.10 - 192.168.0.11"}},
    /* \v and \f are not list white space. */
    {"\va\f", 1, {"\va\f"}},
    {"", 0, {NULL}},
    {" ", 0, {NULL}},
    {"\t\r\n", 0, {NULL}},
    {",", 0, {NULL}},
    {",,", 0, {NULL}},
    {",a", 0, {NULL}},
    {" , a", 0, {NULL}},
    {"a,", 0, {NULL}},
    {"a, ", 0, {NULL}},
    {"a,,b", 0, {NULL}},
    {"a, \t,b", 0, {NULL}},
};

static void test_list_split(void)
{
    for (size_t i = 0; i < N(lists); i++) {
        char err[160] = "", want_err[160], *sentinel = NULL;
        char **v = &sentinel; /* not NULL, so that a failure must write it */
        size_t n = 99;
        int rc;

        errno = 0;
        rc = ipam_list_split(lists[i].list, &v, &n, err, sizeof err);
        if (lists[i].n == 0) {
            snprintf(want_err, sizeof want_err, "empty entry in list `%s'", lists[i].list);
            CHECK_MSG(rc == -1 && errno == EINVAL, "row %zu: list `%s' must fail with EINVAL", i,
                      lists[i].list);
            CHECK_MSG(v == NULL && n == 0, "row %zu: a refused list leaves no entries", i);
            CHECK_EQ_STR(err, want_err);
            continue;
        }
        if (CHECK_MSG(rc == 0 && n == lists[i].n && v != NULL,
                      "row %zu: list `%s': rc %d, %zu entries, want %zu (%s)", i, lists[i].list, rc,
                      n, lists[i].n, err))
            for (size_t k = 0; k < n; k++)
                CHECK_MSG(strcmp(v[k], lists[i].want[k]) == 0,
                          "row %zu entry %zu: got `%s', want `%s'", i, k, v[k], lists[i].want[k]);
        if (rc == 0)
            ipam_list_free(v, n);
    }
    ipam_list_free(NULL, 0);
}

int main(void)
{
    test_add();
    test_add_many();
    test_add_model();
    test_lookup();
    test_range_format();
    test_pools();
    test_counts();
    test_bad_pools();
    test_raw_pools();
    test_list_split();
    return check_summary();
}
