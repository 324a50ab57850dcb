/* The core: pools, leases, address spaces, revisions and the event log,
 * all in memory, owned by one thread, made durable through a store.
 *
 * Every mutation (st_apply_pool, st_delete_pool, st_allocate, st_release,
 * st_renew, st_expire) validates its whole input first: on error it fills the
 * status, changes nothing and returns the error. On success it changes the
 * memory state at once, bumps the revision, and queues a store op and an
 * event. st_commit then makes everything queued durable in one transaction.
 * If the commit fails, the state reloads itself from the store, so memory
 * never holds what the store does not (the caller answers UNAVAILABLE to the
 * mutations of that batch). Events become visible to watchers only once
 * committed.
 *
 * Pointers returned (struct pool, struct lease) are valid until the next
 * mutation or commit. */
#ifndef IPAMD_STATE_H
#define IPAMD_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "avl.h"
#include "err.h"
#include "ipam/addr.h"
#include "ipam/ipset.h"
#include "ipam/v1/ipam.pb-c.h"
#include "store.h"
#include "usedidx.h"

#define IPAM_MAX_TTL 315360000u /* ten years */
#define IPAM_DEFAULT_SPACE "default"

struct space {
    struct space *next;
    char *name;
    struct avl holders;  /* struct lease_addr by (address, lease) */
    struct usedidx used; /* addresses with at least one holder */
};

struct pool {
    struct avl_node by_name;
    char *name;
    struct space *space;
    char **blocks;
    size_t nblocks;
    ipam_set set;    /* what automatic allocation may pick (after skip_end_ips) */
    ipam_set raw;    /* the blocks as written: requested addresses must be here */
    int order;       /* IPAM__V1__SEARCH_ORDER__* */
    bool skip_end_ips, avoid_buggy_ips, allow_share, dhcp;
    uint64_t create_revision, revision;
    struct lease *leases; /* list through lease->pool_next */
    size_t nleases;
};

struct lease;

/* One address of a lease, in its space's holders tree. n.aux is the entry's
 * index in its lease's addr[], which is how lease_addr_lease finds the lease
 * without a pointer (a lease is the bulk of ipamd's memory). */
struct lease_addr {
    struct avl_node n;
    ipam_u128 addr;
};

struct port {
    uint8_t proto; /* 1 TCP, 2 UDP, 3 SCTP */
    uint16_t port;
};

struct label {
    char *key, *value;
};

/* One allocation: the struct, naddr lease_addr entries, then the owner. */
struct lease {
    struct avl_node by_owner;
    char *owner;       /* stored after addr[], in the same allocation */
    struct pool *pool; /* NULL for static reservations; kept after detaching */
    struct space *space;
    struct lease *pool_prev, *pool_next;
    struct label *labels; /* NULL when none */
    struct port *ports;   /* NULL when none */
    char *sharing_key;    /* NULL when none */
    int64_t expire_time, create_time; /* expiring leases are in state->expiry */
    uint64_t create_revision, revision;
    uint32_t ttl;
    uint8_t naddr, nlabels, nports; /* at most 2, 64, 64 */
    bool held; /* addresses are in the space index (false for DHCP leases) */
    struct lease_addr addr[];
};

static inline struct lease *lease_addr_lease(const struct lease_addr *la)
{
    return (struct lease *)((const char *)(la - la->n.aux) - offsetof(struct lease, addr));
}

struct event {
    uint64_t revision;
    uint8_t *data; /* a packed ipam.v1.Event */
    size_t len;
};

struct state;

struct state *state_open(const struct store_backend *b, const char *data_dir, size_t event_ring,
                         char *err, size_t errlen);
void state_close(struct state *s);

uint64_t st_revision(const struct state *s);
/* Revision of the last committed change. */
uint64_t st_committed(const struct state *s);
bool st_dirty(const struct state *s);
/* Makes every queued change durable. On failure reloads from the store and
 * returns -1 with the reason in err. */
int st_commit(struct state *s, char *err, size_t errlen);

/* Event log: the committed event with the smallest revision >= rev.
 * Returns NULL when none is committed yet; sets *gone when rev is older than
 * the oldest event still held (and rev <= committed). */
const struct event *st_event_from(const struct state *s, uint64_t rev, bool *gone);

enum ipam_err st_apply_pool(struct state *s, const Ipam__V1__Pool *in, struct pool **out,
                            bool *created, bool *changed, struct ipam_status *st);
enum ipam_err st_delete_pool(struct state *s, const char *name, bool force, uint32_t *released,
                             struct ipam_status *st);
struct pool *st_pool(const struct state *s, const char *name);
struct pool *st_pool_first(const struct state *s);
struct pool *st_pool_next(const struct pool *p);

enum ipam_err st_allocate(struct state *s, const Ipam__V1__AllocateRequest *req,
                          struct lease **out, bool *created, struct ipam_status *st);
/* On success *out is the released lease, detached: free it with lease_free. */
enum ipam_err st_release(struct state *s, const char *owner, struct lease **out,
                         struct ipam_status *st);
enum ipam_err st_renew(struct state *s, const char *owner, uint32_t ttl, struct lease **out,
                       struct ipam_status *st);
struct lease *st_lease(const struct state *s, const char *owner);
/* First lease whose owner sorts after `after' ("" for the first). */
struct lease *st_lease_after(const struct state *s, const char *after);
struct lease *st_lease_next(const struct lease *l);
size_t st_lease_count(const struct state *s);

/* Expires every lease due at or before now. Returns how many. After a failed
 * commit, expiry pauses for a second (st_next_expiry says until when). */
size_t st_expire(struct state *s, int64_t now);
/* Earliest expiry, or 0 when no lease expires. */
int64_t st_next_expiry(const struct state *s);

void lease_free(struct lease *l);

/* The pool name a lease reports ("" for a static reservation), and its
 * sharing key ("" when none). Each lease saves two allocations this way. */
static inline const char *lease_pool_name(const struct lease *l)
{
    return l->pool ? l->pool->name : "";
}
static inline const char *lease_sharing_key(const struct lease *l)
{
    return l->sharing_key ? l->sharing_key : "";
}

/* Per-family counts of a pool: total, used, free. */
struct pool_stats {
    ipam_u128 total[2], used[2]; /* [0] IPv4, [1] IPv6 */
};
void st_pool_stats(const struct pool *p, struct pool_stats *out);

#endif
