/* Address and block text: parsing with inet_pton, RFC 5952 formatting by hand. */
#include "ipam/addr.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ipam_addr_parse(const char *s, size_t len, ipam_u128 *out)
{
    /* inet_pton needs a NUL-terminated string; INET6_ADDRSTRLEN bounds every
     * text it accepts, so anything longer is refused without copying. */
    char buf[INET6_ADDRSTRLEN];
    unsigned char b[16];
    ipam_u128 v = 0;

    if (len == 0 || len >= sizeof buf || memchr(s, '\0', len) != NULL)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';

    if (inet_pton(AF_INET, buf, b) == 1) {
        *out = ipam_v4((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]);
        return 0;
    }
    if (inet_pton(AF_INET6, buf, b) != 1)
        return -1;
    for (int i = 0; i < 16; i++)
        v = v << 8 | b[i];
    /* IPv4 is stored IPv4-mapped: accepting "::ffff:a.b.c.d" (or its hex
     * spelling) would give two texts for one address, and it would format
     * back as a dotted quad, so it is refused. */
    if (ipam_is_v4(v))
        return -1;
    *out = v;
    return 0;
}

char *ipam_addr_format(ipam_u128 a, char *buf)
{
    unsigned g[8];
    int best = -1, bestlen = 1, pos = 0;
    char *p = buf;

    if (ipam_is_v4(a)) {
        uint32_t v = (uint32_t)a;
        snprintf(buf, IPAM_ADDR_STRLEN, "%u.%u.%u.%u", v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff,
                 v & 0xff);
        return buf;
    }
    for (int i = 0; i < 8; i++)
        g[i] = (unsigned)(a >> (112 - 16 * i)) & 0xffff;

    /* RFC 5952 section 4.2: compress the longest run of at least two zero
     * groups, the first one on ties; a lone zero group stays "0". */
    for (int i = 0; i < 8;) {
        int j = i;
        while (j < 8 && g[j] == 0)
            j++;
        if (j - i > bestlen) {
            best = i;
            bestlen = j - i;
        }
        i = j > i ? j : i + 1;
    }

    for (int i = 0; i < 8; i++) {
        if (i == best) {
            pos += snprintf(p + pos, (size_t)(IPAM_ADDR_STRLEN - pos), "::");
            i += bestlen - 1;
            continue;
        }
        /* A group right after "::" or at the start needs no separator. */
        if (i > 0 && i != best + bestlen)
            pos += snprintf(p + pos, (size_t)(IPAM_ADDR_STRLEN - pos), ":");
        pos += snprintf(p + pos, (size_t)(IPAM_ADDR_STRLEN - pos), "%x", g[i]);
    }
    return buf;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Narrows [*s, *s + *len) to exclude leading and trailing white space. */
static void trim(const char **s, size_t *len)
{
    while (*len > 0 && is_space(**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && is_space((*s)[*len - 1]))
        (*len)--;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Parses one address of a block, reporting it and the entry on failure. */
static int parse_part(const char *s, size_t len, const char *entry, int entrylen, ipam_u128 *out,
                      char *err, size_t errlen)
{
    if (ipam_addr_parse(s, len, out) == 0)
        return 0;
    set_err(err, errlen, "invalid address `%.*s' in block `%.*s'", (int)len, s, entrylen, entry);
    return -1;
}

/* Parses a prefix length: digits only, no sign, no leading zero, so each
 * length has one spelling. Values too large for any family saturate. */
static int parse_prefix(const char *p, size_t len, int *out)
{
    int v = 0;

    if (len == 0 || (len > 1 && p[0] == '0'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        if (v <= 128)
            v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

/* IPv4 is held in ::ffff:0:0/96, so an IPv6 block reaching into it would
 * hand out IPv4 addresses under an IPv6 name. IPv4-mapped addresses are
 * never assigned to IPv6 interfaces (RFC 4291 2.5.5.2), so such a block is
 * refused rather than silently cut in two. */
static int check_mapped(const ipam_block *b, const char *s, int elen, char *err, size_t errlen)
{
    if (ipam_is_v4(b->lo) || b->hi < IPAM_V4_BASE || b->lo > (IPAM_V4_BASE | 0xffffffffu))
        return 0;
    set_err(err, errlen, "IPv6 block `%.*s' overlaps the IPv4-mapped range ::ffff:0:0/96", elen,
            s);
    return -1;
}

int ipam_block_parse(const char *s, size_t len, ipam_block *out, char *err, size_t errlen)
{
    const char *dash, *slash;
    int elen;

    trim(&s, &len);
    if (len == 0) {
        set_err(err, errlen, "empty block");
        return -1;
    }
    /* printf's "%.*s" takes an int; no valid entry is anywhere near this
     * long, so clamping only shortens the quote in a message. */
    elen = len > 1024 ? 1024 : (int)len;

    /* No address text contains '-', so the first one separates a range. */
    dash = memchr(s, '-', len);
    if (dash != NULL) {
        const char *a = s, *b = dash + 1;
        size_t alen = (size_t)(dash - s), blen = len - alen - 1;
        ipam_u128 lo, hi;

        trim(&a, &alen);
        trim(&b, &blen);
        if (parse_part(a, alen, s, elen, &lo, err, errlen) != 0 ||
            parse_part(b, blen, s, elen, &hi, err, errlen) != 0)
            return -1;
        if (ipam_family_of(lo) != ipam_family_of(hi)) {
            set_err(err, errlen, "range `%.*s' mixes IPv4 and IPv6", elen, s);
            return -1;
        }
        if (lo > hi) {
            set_err(err, errlen, "range `%.*s' starts after it ends", elen, s);
            return -1;
        }
        *out = (ipam_block){.lo = lo, .hi = hi, .prefix = -1};
        return check_mapped(out, s, elen, err, errlen);
    }

    slash = memchr(s, '/', len);
    if (slash != NULL) {
        const char *p = slash + 1;
        size_t alen = (size_t)(slash - s), plen = len - alen - 1;
        int bits, prefix, hostbits, qlen;
        ipam_u128 a, hostmask;

        if (parse_part(s, alen, s, elen, &a, err, errlen) != 0)
            return -1;
        bits = ipam_is_v4(a) ? 32 : 128;
        qlen = plen > 64 ? 64 : (int)plen;
        if (parse_prefix(p, plen, &prefix) != 0) {
            set_err(err, errlen, "invalid prefix length `%.*s' in block `%.*s'", qlen, p, elen, s);
            return -1;
        }
        if (prefix > bits) {
            set_err(err, errlen, "prefix length `%.*s' out of range in block `%.*s'", qlen, p, elen,
                    s);
            return -1;
        }
        hostbits = bits - prefix;
        hostmask = hostbits == 128 ? ~(ipam_u128)0 : ((ipam_u128)1 << hostbits) - 1;
        *out =
            (ipam_block){.lo = a & ~hostmask, .hi = (a & ~hostmask) | hostmask, .prefix = prefix};
        return check_mapped(out, s, elen, err, errlen);
    }

    set_err(err, errlen, "block `%.*s' is neither a CIDR (addr/prefix) nor a range (start-end)",
            elen, s);
    return -1;
}
