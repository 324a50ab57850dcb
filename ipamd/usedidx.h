/* The used-address index of one address space: which addresses are held,
 * kept as coalesced intervals, so that "first free address of a pool in search
 * order" costs O(log n) per pool block, never a scan of addresses or leases.
 *
 * Pools that avoid IPv4 x.x.x.0 and x.x.x.255 see runs of used addresses
 * broken only by such addresses as one run ("bridged"), so a pool packed /24
 * by /24 is still searched in O(log n). Each node stores whether the gap to
 * its successor is bridgeable, and every subtree whether it holds a node that
 * is not; both are AVL aggregates.
 *
 * Marking an address already marked, or unmarking one not marked, is a caller
 * bug (asserted). Functions returning int return 0, or -1 when memory runs
 * out, with the index unchanged. */
#ifndef IPAMD_USEDIDX_H
#define IPAMD_USEDIDX_H

#include <stdbool.h>
#include "avl.h"
#include "ipam/addr.h"
#include "ipam/ipset.h"

struct usedidx {
    struct avl used;   /* every held address */
    struct avl buggy;  /* held IPv4 addresses ending in .0 or .255, for counts */
};

void usedidx_init(struct usedidx *u);
void usedidx_free(struct usedidx *u);
int usedidx_mark(struct usedidx *u, ipam_u128 a);
void usedidx_unmark(struct usedidx *u, ipam_u128 a);
bool usedidx_has(const struct usedidx *u, ipam_u128 a);
/* Number of held addresses in [lo, hi]; with avoid_buggy, those ending in .0
 * or .255 are not counted. */
ipam_u128 usedidx_count(const struct usedidx *u, ipam_u128 lo, ipam_u128 hi, bool avoid_buggy);
/* Number of intervals the index holds (for tests and metrics). */
size_t usedidx_intervals(const struct usedidx *u);

/* The first free address of set in search order (descending when desc),
 * skipping IPv4 x.x.x.0/255 when avoid_buggy, restricted to family f.
 * Returns true and sets *out, or false when the set has none free. */
bool usedidx_first_free(const struct usedidx *u, const ipam_set *set, ipam_family f, bool desc,
                        bool avoid_buggy, ipam_u128 *out);

/* True for IPv4 addresses whose last octet is 0 or 255. */
static inline bool ipam_is_buggy(ipam_u128 a)
{
    return ipam_is_v4(a) && ((a & 0xff) == 0 || (a & 0xff) == 0xff);
}
/* Number of such addresses in [lo, hi] (both IPv4). */
ipam_u128 ipam_buggy_count(ipam_u128 lo, ipam_u128 hi);

#endif
