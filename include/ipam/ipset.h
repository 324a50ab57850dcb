/* Interval sets: sorted, disjoint inclusive address ranges.
 *
 * A pool's address set is one of these: its blocks merged. Memory is one array
 * of ranges, never one entry per address, so a /64 costs what a /30 costs.
 * Every range holds addresses of one family. Ranges of one family are never
 * adjacent; ranges of different families may be (::fffe:ffff:ffff and 0.0.0.0
 * are never merged, so counts per family stay exact). The set owns its
 * array; ipam_set_free releases it and leaves it empty and reusable.
 * Functions returning int return 0, or -1 when memory runs out (the set is
 * then unchanged). */
#ifndef IPAM_IPSET_H
#define IPAM_IPSET_H

#include "ipam/addr.h"

typedef struct {
    ipam_u128 lo, hi;
} ipam_range;

typedef struct {
    ipam_range *r;
    size_t n, cap;
} ipam_set;

#define IPAM_SET_INIT {NULL, 0, 0}

void ipam_set_free(ipam_set *s);
/* Adds [lo, hi], merging with overlapping and adjacent ranges; a range that
 * crosses the edges of the IPv4-mapped space is split there. lo > hi adds
 * nothing. */
int ipam_set_add(ipam_set *s, ipam_u128 lo, ipam_u128 hi);
bool ipam_set_contains(const ipam_set *s, ipam_u128 a);
/* Index of the range holding a, or of the first range after a (s->n if none). */
size_t ipam_set_lower(const ipam_set *s, ipam_u128 a);
/* Number of addresses in the set of the given family. Cannot overflow: the
 * IPv4-mapped range is never part of an IPv6 block. */
ipam_u128 ipam_set_count(const ipam_set *s, ipam_family f);
bool ipam_set_has_family(const ipam_set *s, ipam_family f);
bool ipam_set_equal(const ipam_set *a, const ipam_set *b);

/* Builds a pool's set from its block strings: each parsed as by
 * ipam_block_parse; with skip_end_ips, the first and last address of IPv4
 * CIDRs shorter than /31 are dropped; then everything is merged. IPv6 blocks
 * touching the IPv4-mapped range ::ffff:0:0/96 are refused. *out is written,
 * never read or freed: pass a set that holds no memory. Returns 0, or -1 with
 * a message quoting the first bad entry in err (out is then empty). */
int ipam_set_from_blocks(const char *const *blocks, size_t n, bool skip_end_ips,
                         ipam_set *out, char *err, size_t errlen);

/* Writes one range as text into buf (IPAM_BLOCK_STRLEN bytes) and returns
 * buf: a range that is exactly one CIDR as "a/len" (a single address as
 * "a/32" or "a/128"), any other as "lo-hi". */
char *ipam_range_format(ipam_range r, char *buf);

/* Splits a comma-separated list into trimmed entries: a malloc'd array of
 * malloc'd strings (free with ipam_list_free). Spaces, tabs, CR and LF around
 * an entry are trimmed; inside it they are kept. An empty entry (",,", a
 * leading or trailing comma, an empty list) fails with -1 and a message
 * quoting the list in err, errno EINVAL; running out of memory fails with -1,
 * "out of memory" and errno ENOMEM. On failure *out is NULL and *n is 0.
 * The Kubernetes adapter's ConfigMap values and the pools file's blocks are
 * such lists. */
int ipam_list_split(const char *list, char ***out, size_t *n, char *err, size_t errlen);
/* Frees the n entries of v and v itself; NULL is ignored. */
void ipam_list_free(char **v, size_t n);

#endif
