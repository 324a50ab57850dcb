/* Unit tests for address, block and u128 text: parse, format, round trips and errors. */
#include "ipam/addr.h"

#include <string.h>

#include "check.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Texts that are already canonical: they must format back byte-identically. */
static const char *const canonical[] = {
    "0.0.0.0",
    "192.0.2.1",
    "10.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "1::",
    "fe80::1:0",
    "fe80::13",
    "2001:db8::1",
    "2001:db8:0:1:1:1:1:1",
    "2001:db8::1:0:0:1",
    "1:0:0:2::3",
    "0:0:1::",
    "1:2:3:4:5:6:7:0",
    "0:2:3:4:5:6:7:8",
    "1:0:1:0:1:0:1:0",
    "::fffe:ffff:ffff",
    "::1:0:0:0",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
};

/* Non-canonical spellings and the one canonical text each must format to. */
static const struct {
    const char *in, *out;
} noncanonical[] = {
    {"FE80:0:0::1:0", "fe80::1:0"},
    {"fe80:0:0:0:0:0:1:0", "fe80::1:0"},
    {"2001:0db8::0001", "2001:db8::1"},
    {"2001:DB8::", "2001:db8::"},
    {"0:0:0:0:0:0:0:0", "::"},
    {"0:0:0:0:0:0:0:1", "::1"},
    {"2001:db8::1:1:1:1:1", "2001:db8:0:1:1:1:1:1"},
    {"1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"},
    {"::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"},
    {"2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
    {"1:0:0:2:0:0:0:3", "1:0:0:2::3"},
    {"::1.2.3.4", "::102:304"},
    {"0000:0000:0000:0000:0000:0000:0000:0001", "::1"},
};

/* Parsed values, to check the byte order as well as the text. */
static const struct {
    const char *in;
    ipam_u128 want;
} values[] = {
    {"192.0.2.1", IPAM_V4_BASE | 0xc0000201u},
    {"0.0.0.0", IPAM_V4_BASE},
    {"::", 0},
    {"::1", 1},
    {"fe80::1:0", ((ipam_u128)0xfe80 << 112) | 0x10000},
    {"::fffe:ffff:ffff", IPAM_V4_BASE - 1},
    {"::1:0:0:0", (IPAM_V4_BASE | 0xffffffffu) + 1},
};

static const char *const bad_addrs[] = {
    "",
    "1.2.3",
    "1.2.3.4.5",
    "256.0.0.1",
    "01.2.3.4",
    "::ffff:1.2.3.4",
    "::ffff:0:0",
    "::FFFF:c000:201",
    "gg::1",
    "1.2.3.4 ",
    " 1.2.3.4",
    "1::2::3",
    "12345::",
    ":1::",
    "1:2:3:4:5:6:7:8:9",
    "192.0.2.0/24",
    "0000:0000:0000:0000:0000:0000:0000:0000:0000",
};

static void test_addr_parse_format(void)
{
    char buf[IPAM_ADDR_STRLEN];
    ipam_u128 a;

    for (size_t i = 0; i < N(canonical); i++) {
        const char *s = canonical[i];
        if (!CHECK_MSG(ipam_addr_parse(s, strlen(s), &a) == 0, "parse `%s'", s))
            continue;
        CHECK_EQ_STR(ipam_addr_format(a, buf), s);
    }
    for (size_t i = 0; i < N(noncanonical); i++) {
        const char *s = noncanonical[i].in;
        if (!CHECK_MSG(ipam_addr_parse(s, strlen(s), &a) == 0, "parse `%s'", s))
            continue;
        CHECK_EQ_STR(ipam_addr_format(a, buf), noncanonical[i].out);
    }
    for (size_t i = 0; i < N(values); i++) {
        const char *s = values[i].in;
        CHECK_MSG(ipam_addr_parse(s, strlen(s), &a) == 0 && a == values[i].want, "value of `%s'",
                  s);
        CHECK_MSG(ipam_is_v4(values[i].want) == (strchr(s, ':') == NULL), "family of `%s'", s);
    }
    for (size_t i = 0; i < N(bad_addrs); i++) {
        const char *s = bad_addrs[i];
        a = 42;
        CHECK_MSG(ipam_addr_parse(s, strlen(s), &a) == -1, "`%s' must not parse", s);
        CHECK_MSG(a == 42, "failed parse of `%s' must leave *out alone", s);
    }

    /* The length is exact: a prefix of a longer text parses, an embedded NUL
     * does not. */
    CHECK(ipam_addr_parse("192.0.2.1/24", 9, &a) == 0 && a == ipam_v4(0xc0000201u));
    CHECK(ipam_addr_parse("1.2.3.4\0", 8, &a) == -1);
    CHECK(ipam_addr_parse("1.2.3.4", 5, &a) == -1);

    CHECK_EQ_INT(ipam_family_of(ipam_v4(0)), IPAM_FAMILY_V4);
    CHECK_EQ_INT(ipam_family_of(1), IPAM_FAMILY_V6);
}

static const struct {
    const char *text;
    ipam_u128 v;
} u128s[] = {
    {"0", 0},
    {"1", 1},
    {"10", 10},
    {"4294967296", (ipam_u128)1 << 32},
    {"18446744073709551615", ((ipam_u128)1 << 64) - 1},
    {"18446744073709551616", (ipam_u128)1 << 64},
    {"340282366920938463463374607431768211455", ~(ipam_u128)0},
};

static const char *const bad_u128s[] = {
    "",
    "-1",
    "+1",
    " 1",
    "1 ",
    "1a",
    "0x10",
    "1.0",
    "340282366920938463463374607431768211456",
    "999999999999999999999999999999999999999999",
};

static void test_u128(void)
{
    char buf[IPAM_U128_STRLEN];
    ipam_u128 v;

    for (size_t i = 0; i < N(u128s); i++) {
        CHECK_EQ_STR(ipam_u128_format(u128s[i].v, buf), u128s[i].text);
        CHECK_MSG(ipam_u128_parse(u128s[i].text, &v) == 0 && v == u128s[i].v, "parse `%s'",
                  u128s[i].text);
    }
    CHECK(ipam_u128_parse("007", &v) == 0 && v == 7);
    for (size_t i = 0; i < N(bad_u128s); i++) {
        v = 42;
        CHECK_MSG(ipam_u128_parse(bad_u128s[i], &v) == -1 && v == 42, "`%s' must not parse",
                  bad_u128s[i]);
    }
}

/* Each entry parses to [lo, hi] with prefix, or fails with err. */
static const struct {
    const char *in, *lo, *hi;
    int prefix;
    const char *err;
} blocks[] = {
    {"192.168.1.1/24", "192.168.1.0", "192.168.1.255", 24, NULL},
    {"192.168.0.200/30", "192.168.0.200", "192.168.0.203", 30, NULL},
    {"192.168.0.255/30", "192.168.0.252", "192.168.0.255", 30, NULL},
    {"10.1.2.3/8", "10.0.0.0", "10.255.255.255", 8, NULL},
    {"0.0.0.0/0", "0.0.0.0", "255.255.255.255", 0, NULL},
    {"192.0.2.7/32", "192.0.2.7", "192.0.2.7", 32, NULL},
    {"192.0.2.7/31", "192.0.2.6", "192.0.2.7", 31, NULL},
    {"2001:db8::1/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", 64, NULL},
    {"::/0", NULL, NULL, 0, "IPv6 block `::/0' overlaps the IPv4-mapped range ::ffff:0:0/96"},
    {"::/80", NULL, NULL, 0, "IPv6 block `::/80' overlaps the IPv4-mapped range ::ffff:0:0/96"},
    {" ::1 - ::1:0:0:0 ", NULL, NULL, 0,
     "IPv6 block `::1 - ::1:0:0:0' overlaps the IPv4-mapped range ::ffff:0:0/96"},
    {"::1-::fffe:ffff:ffff", "::1", "::fffe:ffff:ffff", -1, NULL},
    {"::1:0:0:0-::1:0:0:1", "::1:0:0:0", "::1:0:0:1", -1, NULL},
    {"::/81", "::", "::7fff:ffff:ffff", 81, NULL},
    {"8000::/1", "8000::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, NULL},
    {"fe80::1/128", "fe80::1", "fe80::1", 128, NULL},
    {"2001::49fe/127", "2001::49fe", "2001::49ff", 127, NULL},
    {"fe80::10/126", "fe80::10", "fe80::13", 126, NULL},
    {"192.0.2.1-192.0.2.9", "192.0.2.1", "192.0.2.9", -1, NULL},
    {"192.0.2.1-192.0.2.1", "192.0.2.1", "192.0.2.1", -1, NULL},
    {"192.168.0.253-192.168.1.2", "192.168.0.253", "192.168.1.2", -1, NULL},
    {"fe80::ffff-fe80::1:3", "fe80::ffff", "fe80::1:3", -1, NULL},
    {"  192.0.2.1 - 192.0.2.9  ", "192.0.2.1", "192.0.2.9", -1, NULL},
    {"\t10.0.0.0/8\n", "10.0.0.0", "10.255.255.255", 8, NULL},
    {" fe80::13 -fe80::14", "fe80::13", "fe80::14", -1, NULL},
    {"300.1.1.1/24", NULL, NULL, 0, "invalid address `300.1.1.1' in block `300.1.1.1/24'"},
    {"192.0.2.9-192.0.2.1", NULL, NULL, 0, "range `192.0.2.9-192.0.2.1' starts after it ends"},
    {"192.0.2.1-2001:db8::1", NULL, NULL, 0, "range `192.0.2.1-2001:db8::1' mixes IPv4 and IPv6"},
    {"2001:db8::1-192.0.2.1", NULL, NULL, 0, "range `2001:db8::1-192.0.2.1' mixes IPv4 and IPv6"},
    {"192.0.2.0/33", NULL, NULL, 0, "prefix length `33' out of range in block `192.0.2.0/33'"},
    {"2001:db8::/129", NULL, NULL, 0, "prefix length `129' out of range in block `2001:db8::/129'"},
    {"192.0.2.0/99999999999999999999", NULL, NULL, 0,
     "prefix length `99999999999999999999' out of range in block "
     "`192.0.2.0/99999999999999999999'"},
    {"", NULL, NULL, 0, "empty block"},
    {"   ", NULL, NULL, 0, "empty block"},
    {" 300.1.1.1/24 ", NULL, NULL, 0, "invalid address `300.1.1.1' in block `300.1.1.1/24'"},
    {"192.0.2.0/", NULL, NULL, 0, "invalid prefix length `' in block `192.0.2.0/'"},
    {"192.0.2.0/x", NULL, NULL, 0, "invalid prefix length `x' in block `192.0.2.0/x'"},
    {"192.0.2.0/024", NULL, NULL, 0, "invalid prefix length `024' in block `192.0.2.0/024'"},
    {"192.0.2.0/ 24", NULL, NULL, 0, "invalid prefix length ` 24' in block `192.0.2.0/ 24'"},
    {"/24", NULL, NULL, 0, "invalid address `' in block `/24'"},
    {"192.0.2.1-", NULL, NULL, 0, "invalid address `' in block `192.0.2.1-'"},
    {"-192.0.2.1", NULL, NULL, 0, "invalid address `' in block `-192.0.2.1'"},
    {"192.0.2.1 - 192.0.2.x", NULL, NULL, 0,
     "invalid address `192.0.2.x' in block `192.0.2.1 - 192.0.2.x'"},
    {"1.1.1.1-1.1.1.2-1.1.1.3", NULL, NULL, 0,
     "invalid address `1.1.1.2-1.1.1.3' in block `1.1.1.1-1.1.1.2-1.1.1.3'"},
    {"::ffff:192.0.2.0/120", NULL, NULL, 0,
     "invalid address `::ffff:192.0.2.0' in block `::ffff:192.0.2.0/120'"},
    {"192.0.2.1", NULL, NULL, 0,
     "block `192.0.2.1' is neither a CIDR (addr/prefix) nor a range (start-end)"},
};

static void test_block_parse(void)
{
    char err[160], buf[IPAM_ADDR_STRLEN];
    ipam_block b;

    for (size_t i = 0; i < N(blocks); i++) {
        const char *s = blocks[i].in;
        int rc;

        err[0] = '\0';
        rc = ipam_block_parse(s, strlen(s), &b, err, sizeof err);
        if (blocks[i].err != NULL) {
            CHECK_MSG(rc == -1, "`%s' must not parse", s);
            CHECK_EQ_STR(err, blocks[i].err);
            continue;
        }
        if (!CHECK_MSG(rc == 0, "`%s' must parse, got: %s", s, err))
            continue;
        CHECK_EQ_STR(ipam_addr_format(b.lo, buf), blocks[i].lo);
        CHECK_EQ_STR(ipam_addr_format(b.hi, buf), blocks[i].hi);
        CHECK_MSG(b.prefix == blocks[i].prefix, "prefix of `%s': %d, want %d", s, b.prefix,
                  blocks[i].prefix);
    }

    /* A short error buffer is truncated and terminated; no buffer at all is fine. */
    memset(err, 'x', sizeof err);
    CHECK(ipam_block_parse("300.1.1.1/24", 12, &b, err, 8) == -1);
    CHECK_EQ_STR(err, "invalid");
    CHECK(ipam_block_parse("300.1.1.1/24", 12, &b, NULL, 0) == -1);

    /* The length is exact: only the first len bytes are the entry. */
    CHECK(ipam_block_parse("192.0.2.0/24,10.0.0.0/8", 12, &b, err, sizeof err) == 0 &&
          b.prefix == 24);
}

int main(void)
{
    test_addr_parse_format();
    test_u128();
    test_block_parse();
    return check_summary();
}
