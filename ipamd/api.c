/* RPC handlers: decoded requests in, core operations, replies out. */
#include "api.h"

#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

#define LIST_DEFAULT_PAGE 1000
#define LIST_MAX_PAGE 10000

#define NEW(c, type, init) ({                                                                      \
    type *m_ = arena_alloc(&(c)->arena, sizeof(type));                                             \
    init(m_);                                                                                      \
    m_;                                                                                            \
})

static Ipam__V1__Lease *lease_msg(struct api_ctx *c, const struct lease *l)
{
    Ipam__V1__Lease *m = arena_alloc(&c->arena, sizeof(*m));
    lease_to_pb(&c->arena, l, m);
    return m;
}

static Ipam__V1__Pool *pool_msg(struct api_ctx *c, const struct pool *p)
{
    Ipam__V1__Pool *m = arena_alloc(&c->arena, sizeof(*m));
    pool_to_pb(&c->arena, p, true, m);
    return m;
}

static enum ipam_err apply_pool(struct api_ctx *c, const ProtobufCMessage *in,
                                ProtobufCMessage **reply, struct ipam_status *st)
{
    const Ipam__V1__ApplyPoolRequest *req = (const void *)in;
    if (!req->pool)
        return ipam_fail(st, IPAM_EINVAL, "ApplyPool needs a pool");
    struct pool *p;
    bool created, changed;
    enum ipam_err e = st_apply_pool(c->state, req->pool, &p, &created, &changed, st);
    if (e)
        return e;
    Ipam__V1__ApplyPoolResponse *r =
        NEW(c, Ipam__V1__ApplyPoolResponse, ipam__v1__apply_pool_response__init);
    r->pool = pool_msg(c, p);
    r->created = created;
    r->changed = changed;
    *reply = &r->base;
    return IPAM_OK;
}

static enum ipam_err get_pool(struct api_ctx *c, const ProtobufCMessage *in,
                              ProtobufCMessage **reply, struct ipam_status *st)
{
    const Ipam__V1__GetPoolRequest *req = (const void *)in;
    struct pool *p = st_pool(c->state, req->name);
    if (!p)
        return ipam_fail(st, IPAM_ENOTFOUND, "pool `%.64s' not found", req->name);
    Ipam__V1__GetPoolResponse *r =
        NEW(c, Ipam__V1__GetPoolResponse, ipam__v1__get_pool_response__init);
    r->pool = pool_msg(c, p);
    *reply = &r->base;
    return IPAM_OK;
}

static enum ipam_err list_pools(struct api_ctx *c, const ProtobufCMessage *in,
                                ProtobufCMessage **reply, struct ipam_status *st)
{
    (void)in;
    (void)st;
    Ipam__V1__ListPoolsResponse *r =
        NEW(c, Ipam__V1__ListPoolsResponse, ipam__v1__list_pools_response__init);
    size_t n = 0;
    for (struct pool *p = st_pool_first(c->state); p; p = st_pool_next(p))
        n++;
    r->pools = arena_alloc(&c->arena, n * sizeof(*r->pools));
    for (struct pool *p = st_pool_first(c->state); p; p = st_pool_next(p))
        r->pools[r->n_pools++] = pool_msg(c, p);
    r->revision = st_committed(c->state);
    *reply = &r->base;
    return IPAM_OK;
}

static enum ipam_err delete_pool(struct api_ctx *c, const ProtobufCMessage *in,
                                 ProtobufCMessage **reply, struct ipam_status *st)
{
    const Ipam__V1__DeletePoolRequest *req = (const void *)in;
    uint32_t released = 0;
    enum ipam_err e = st_delete_pool(c->state, req->name, req->force, &released, st);
    if (e)
        return e;
    Ipam__V1__DeletePoolResponse *r =
        NEW(c, Ipam__V1__DeletePoolResponse, ipam__v1__delete_pool_response__init);
    r->released_leases = released;
    *reply = &r->base;
    return IPAM_OK;
}

static enum ipam_err allocate(struct api_ctx *c, const ProtobufCMessage *in,
                              ProtobufCMessage **reply, struct ipam_status *st)
{
    struct lease *l;
    bool created;
    enum ipam_err e = st_allocate(c->state, (const void *)in, &l, &created, st);
    if (e)
        return e;
    Ipam__V1__AllocateResponse *r =
        NEW(c, Ipam__V1__AllocateResponse, ipam__v1__allocate_response__init);
    r->lease = lease_msg(c, l);
    r->created = created;
    *reply = &r->base;
    return IPAM_OK;
}

static enum ipam_err release(struct api_ctx *c, const ProtobufCMessage *in,
                             ProtobufCMessage **reply, struct ipam_status *st)
{
    const Ipam__V1__ReleaseRequest *req = (const void *)in;
    struct lease *l;
    enum ipam_err e = st_release(c->state, req->owner, &l, st);
    if (e)
        return e;
    Ipam__V1__ReleaseResponse *r =
        NEW(c, Ipam__V1__ReleaseResponse, ipam__v1__release_response__init);
    r->lease = lease_msg(c, l);
    /* The reply must own its strings: the lease is gone once it's packed. */
    r->lease->owner = arena_strdup(&c->arena, l->owner);
    r->lease->pool = arena_strdup(&c->arena, lease_pool_name(l));
    r->lease->sharing_key = arena_strdup(&c->arena, lease_sharing_key(l));
    r->lease->space = arena_strdup(&c->arena, l->space->name);
    for (size_t i = 0; i < r->lease->n_labels; i++) {
        r->lease->labels[i]->key = arena_strdup(&c->arena, l->labels[i].key);
        r->lease->labels[i]->value = arena_strdup(&c->arena, l->labels[i].value);
    }
    lease_free(l);
    *reply = &r->base;
    return IPAM_OK;
}

static enum ipam_err renew(struct api_ctx *c, const ProtobufCMessage *in,
                           ProtobufCMessage **reply, struct ipam_status *st)
{
    const Ipam__V1__RenewRequest *req = (const void *)in;
    struct lease *l;
    enum ipam_err e = st_renew(c->state, req->owner, req->ttl_seconds, &l, st);
    if (e)
        return e;
    Ipam__V1__RenewResponse *r = NEW(c, Ipam__V1__RenewResponse, ipam__v1__renew_response__init);
    r->lease = lease_msg(c, l);
    *reply = &r->base;
    return IPAM_OK;
}

static enum ipam_err get_lease(struct api_ctx *c, const ProtobufCMessage *in,
                               ProtobufCMessage **reply, struct ipam_status *st)
{
    const Ipam__V1__GetLeaseRequest *req = (const void *)in;
    struct lease *l = st_lease(c->state, req->owner);
    if (!l)
        return ipam_fail(st, IPAM_ENOTFOUND, "owner `%.64s' holds no lease", req->owner);
    Ipam__V1__GetLeaseResponse *r =
        NEW(c, Ipam__V1__GetLeaseResponse, ipam__v1__get_lease_response__init);
    r->lease = lease_msg(c, l);
    *reply = &r->base;
    return IPAM_OK;
}

static bool lease_matches(const struct lease *l, const Ipam__V1__ListLeasesRequest *req)
{
    if (req->pool[0] && strcmp(req->pool, lease_pool_name(l)) != 0)
        return false;
    for (size_t i = 0; i < req->n_labels; i++) {
        bool found = false;
        for (size_t j = 0; j < l->nlabels && !found; j++)
            found = strcmp(req->labels[i]->key, l->labels[j].key) == 0 &&
                    strcmp(req->labels[i]->value, l->labels[j].value) == 0;
        if (!found)
            return false;
    }
    return true;
}

static enum ipam_err list_leases(struct api_ctx *c, const ProtobufCMessage *in,
                                 ProtobufCMessage **reply, struct ipam_status *st)
{
    const Ipam__V1__ListLeasesRequest *req = (const void *)in;
    size_t page = req->page_size ? req->page_size : LIST_DEFAULT_PAGE;
    if (page > LIST_MAX_PAGE)
        return ipam_fail(st, IPAM_EINVAL, "page_size %u is more than %d", req->page_size,
                         LIST_MAX_PAGE);
    if (req->pool[0] && !st_pool(c->state, req->pool))
        return ipam_fail(st, IPAM_ENOTFOUND, "pool `%.64s' not found", req->pool);
    /* The page token is the last owner of the previous page. Owners sort
     * bytewise, so the scan starts at the larger of it and the prefix. */
    const char *after = req->page_token;
    size_t plen = strlen(req->owner_prefix);
    struct lease *l;
    if (plen && strcmp(req->owner_prefix, after) > 0) {
        l = st_lease(c->state, req->owner_prefix);
        if (!l)
            l = st_lease_after(c->state, req->owner_prefix);
    } else {
        l = st_lease_after(c->state, after);
    }
    Ipam__V1__ListLeasesResponse *r =
        NEW(c, Ipam__V1__ListLeasesResponse, ipam__v1__list_leases_response__init);
    r->leases = arena_alloc(&c->arena, page * sizeof(*r->leases));
    for (; l; l = st_lease_next(l)) {
        if (plen && strncmp(l->owner, req->owner_prefix, plen) != 0)
            break; /* Past the prefix range: nothing further can match. */
        if (!lease_matches(l, req))
            continue;
        if (r->n_leases == page) {
            r->next_page_token = r->leases[page - 1]->owner;
            break;
        }
        r->leases[r->n_leases++] = lease_msg(c, l);
    }
    r->revision = st_committed(c->state);
    *reply = &r->base;
    return IPAM_OK;
}

bool api_health_known(const char *service)
{
    return !service[0] || strcmp(service, "ipam.v1.Ipam") == 0 ||
           strcmp(service, "grpc.health.v1.Health") == 0;
}

static enum ipam_err health_check(struct api_ctx *c, const ProtobufCMessage *in,
                                  ProtobufCMessage **reply, struct ipam_status *st)
{
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)in;
    if (!api_health_known(req->service))
        return ipam_fail(st, IPAM_ENOTFOUND, "unknown service `%.64s'", req->service);
    Grpc__Health__V1__HealthCheckResponse *r = NEW(c, Grpc__Health__V1__HealthCheckResponse,
                                                   grpc__health__v1__health_check_response__init);
    r->status = c->serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                           : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    *reply = &r->base;
    return IPAM_OK;
}

const struct api_method api_methods[] = {
    {"/ipam.v1.Ipam/ApplyPool", API_WRITE, apply_pool, &ipam__v1__apply_pool_request__descriptor},
    {"/ipam.v1.Ipam/GetPool", API_READ, get_pool, &ipam__v1__get_pool_request__descriptor},
    {"/ipam.v1.Ipam/ListPools", API_READ, list_pools, &ipam__v1__list_pools_request__descriptor},
    {"/ipam.v1.Ipam/DeletePool", API_WRITE, delete_pool,
     &ipam__v1__delete_pool_request__descriptor},
    {"/ipam.v1.Ipam/Allocate", API_WRITE, allocate, &ipam__v1__allocate_request__descriptor},
    {"/ipam.v1.Ipam/Release", API_WRITE, release, &ipam__v1__release_request__descriptor},
    {"/ipam.v1.Ipam/Renew", API_WRITE, renew, &ipam__v1__renew_request__descriptor},
    {"/ipam.v1.Ipam/GetLease", API_READ, get_lease, &ipam__v1__get_lease_request__descriptor},
    {"/ipam.v1.Ipam/ListLeases", API_READ, list_leases,
     &ipam__v1__list_leases_request__descriptor},
    {"/ipam.v1.Ipam/Watch", API_WATCH, NULL, &ipam__v1__watch_request__descriptor},
    {"/grpc.health.v1.Health/Check", API_READ, health_check,
     &grpc__health__v1__health_check_request__descriptor},
    {"/grpc.health.v1.Health/Watch", API_HEALTH_WATCH, NULL,
     &grpc__health__v1__health_check_request__descriptor},
    /* v1alpha's messages are v1's under another package name. */
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", API_REFLECTION, NULL,
     &grpc__reflection__v1__server_reflection_request__descriptor},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", API_REFLECTION, NULL,
     &grpc__reflection__v1__server_reflection_request__descriptor},
};
const size_t api_nmethods = sizeof(api_methods) / sizeof(api_methods[0]);
