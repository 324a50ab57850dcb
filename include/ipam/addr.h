/* Addresses: one 128-bit type for IPv4 and IPv6, parsed and formatted exactly.
 *
 * An IPv4 address is held IPv4-mapped (::ffff:a.b.c.d), so both families sort
 * and compute alike. Text input is the usual dotted quad or RFC 4291 IPv6 text;
 * output is dotted quad or the RFC 5952 canonical form ("fe80::1:0"), so a
 * canonical input formats back to exactly what the user wrote. IPv6 text that
 * denotes an IPv4-mapped address ("::ffff:192.0.2.1") is refused: write the
 * IPv4 address. No function here allocates; none keeps its arguments. */
#ifndef IPAM_ADDR_H
#define IPAM_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

__extension__ typedef unsigned __int128 ipam_u128;

typedef enum { IPAM_FAMILY_V4 = 4, IPAM_FAMILY_V6 = 6 } ipam_family;

/* Longest text an address, a block or a u128 in decimal can take, NUL
 * included. */
#define IPAM_ADDR_STRLEN 46
#define IPAM_BLOCK_STRLEN 96
#define IPAM_U128_STRLEN 40

/* ::ffff:0:0, the first IPv4-mapped address. */
#define IPAM_V4_BASE (((ipam_u128)0xffff) << 32)

static inline ipam_u128 ipam_v4(uint32_t a) { return IPAM_V4_BASE | a; }
static inline bool ipam_is_v4(ipam_u128 a) { return (a >> 32) == 0xffff; }
static inline ipam_family ipam_family_of(ipam_u128 a)
{
    return ipam_is_v4(a) ? IPAM_FAMILY_V4 : IPAM_FAMILY_V6;
}

/* Parses len bytes of s (no surrounding spaces) into *out. Returns 0, or -1
 * when the text is not one IPv4 or IPv6 address. */
int ipam_addr_parse(const char *s, size_t len, ipam_u128 *out);

/* Writes the canonical text of a into buf (at least IPAM_ADDR_STRLEN bytes)
 * and returns buf. */
char *ipam_addr_format(ipam_u128 a, char *buf);

/* A block is an inclusive interval of one family. */
typedef struct {
    ipam_u128 lo, hi;
    int prefix;  /* CIDR prefix length in the family's bits, -1 for a range */
} ipam_block;

/* Parses "addr/prefix" or "start-end" (spaces around the whole entry and
 * around '-' are tolerated). Host bits of a CIDR are masked. The prefix is
 * plain decimal without a leading zero; a bare address (no '/' or '-') is
 * not a block. Returns 0, or -1 with a message quoting the entry in err
 * (errlen bytes, always terminated; err may be NULL): empty entry,
 * unparsable address or prefix, prefix out of range, start after end, mixed
 * families. */
int ipam_block_parse(const char *s, size_t len, ipam_block *out, char *err, size_t errlen);

/* Formats a u128 as a decimal string into buf (IPAM_U128_STRLEN bytes). */
char *ipam_u128_format(ipam_u128 v, char *buf);

/* Parses a decimal u128 (digits only, leading zeros allowed); returns 0, or
 * -1 on anything else or overflow. */
int ipam_u128_parse(const char *s, ipam_u128 *out);

#endif
