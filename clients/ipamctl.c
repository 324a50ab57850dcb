/* ipamctl: the command-line client of ipamd; its subcommand table and main. */
#include <stdio.h>
#include <stdlib.h>

#include <grpc/status.h>
#include <grpc/support/log.h>

#include "cli.h"
#include "cli_flags.h"
#include "cli_output.h"
#include "cli_stats.h"
#include "cli_run.h"

#define EXIT_USAGE 2

/* ---- requests from the options ---------------------------------------------- */

/* protobuf-c's string fields are not const; requests are only read. An
 * option not given is the empty string. */
static char *str(const char *s)
{
    return (char *)(s != NULL ? s : "");
}

/* Map entries of descriptor d (fields key and value) from labels. */
static void *label_entries(const kvlist *labels, const ProtobufCMessageDescriptor *d, arena *a)
{
    ProtobufCMessage **v = arena_calloc(a, labels->n, sizeof(*v));
    unsigned key = protobuf_c_message_descriptor_get_field_by_name(d, "key")->offset;
    unsigned value = protobuf_c_message_descriptor_get_field_by_name(d, "value")->offset;
    for (size_t i = 0; i < labels->n; i++) {
        v[i] = arena_calloc(a, 1, d->sizeof_message);
        protobuf_c_message_init(d, v[i]);
        *(char **)(void *)((char *)v[i] + key) = labels->v[i].key;
        *(char **)(void *)((char *)v[i] + value) = str(labels->v[i].value);
    }
    return v;
}

static void build_pool_apply(ProtobufCMessage *m, const struct opts *o, arena *a)
{
    Ipam__V1__Pool *pool = arena_calloc(a, 1, sizeof(*pool));
    ipam__v1__pool__init(pool);
    pool->name = str(o->args[0]);
    pool->space = str(o->space);
    pool->n_blocks = o->blocks.n;
    pool->blocks = (char **)o->blocks.v;
    pool->search_order = o->order;
    pool->skip_end_ips = o->skip_end_ips;
    pool->avoid_buggy_ips = o->avoid_buggy_ips;
    pool->allow_share = o->allow_share;
    ((Ipam__V1__ApplyPoolRequest *)m)->pool = pool;
}

static void build_pool_get(ProtobufCMessage *m, const struct opts *o, arena *a)
{
    (void)a;
    ((Ipam__V1__GetPoolRequest *)m)->name = str(o->args[0]);
}

static void build_pool_delete(ProtobufCMessage *m, const struct opts *o, arena *a)
{
    Ipam__V1__DeletePoolRequest *req = (Ipam__V1__DeletePoolRequest *)m;
    (void)a;
    req->name = str(o->args[0]);
    req->force = o->force;
}

static void build_allocate(ProtobufCMessage *m, const struct opts *o, arena *a)
{
    Ipam__V1__AllocateRequest *req = (Ipam__V1__AllocateRequest *)m;
    req->pool = str(o->pool);
    req->owner = str(o->owner);
    req->n_addresses = o->addresses.n;
    req->addresses = (char **)o->addresses.v;
    req->family = o->family;
    req->primary_family = o->primary;
    req->ttl_seconds = o->ttl;
    req->n_labels = o->labels.n;
    req->labels =
        label_entries(&o->labels, &ipam__v1__allocate_request__labels_entry__descriptor, a);
    req->n_ports = o->ports.n;
    req->ports = arena_calloc(a, o->ports.n, sizeof(*req->ports));
    for (size_t i = 0; i < o->ports.n; i++) {
        req->ports[i] = arena_calloc(a, 1, sizeof(*req->ports[i]));
        ipam__v1__port__init(req->ports[i]);
        req->ports[i]->protocol = (char *)o->ports.v[i].protocol;
        req->ports[i]->port = o->ports.v[i].port;
    }
    req->sharing_key = str(o->sharing_key);
    req->space = str(o->space);
}

static void build_release(ProtobufCMessage *m, const struct opts *o, arena *a)
{
    (void)a;
    ((Ipam__V1__ReleaseRequest *)m)->owner = str(o->owner);
}

static void build_renew(ProtobufCMessage *m, const struct opts *o, arena *a)
{
    Ipam__V1__RenewRequest *req = (Ipam__V1__RenewRequest *)m;
    (void)a;
    req->owner = str(o->owner);
    req->ttl_seconds = o->ttl;
}

static void build_lease_get(ProtobufCMessage *m, const struct opts *o, arena *a)
{
    (void)a;
    ((Ipam__V1__GetLeaseRequest *)m)->owner = str(o->args[0]);
}

static void build_lease_list(ProtobufCMessage *m, const struct opts *o, arena *a)
{
    Ipam__V1__ListLeasesRequest *req = (Ipam__V1__ListLeasesRequest *)m;
    req->pool = str(o->pool);
    req->owner_prefix = str(o->owner_prefix);
    req->n_labels = o->labels.n;
    req->labels =
        label_entries(&o->labels, &ipam__v1__list_leases_request__labels_entry__descriptor, a);
}

static void build_watch(ProtobufCMessage *m, const struct opts *o, arena *a)
{
    (void)a;
    ((Ipam__V1__WatchRequest *)m)->from_revision = o->from_revision;
}

/* ---- results that are not a pool or a lease ---------------------------------- */

static int print_pool_deleted(const ProtobufCMessage *resp, const struct opts *o)
{
    if (o->output == OUT_JSON) {
        cJSON *j = message_json(resp);
        cJSON_AddItemToObject(j, "name", cJSON_CreateString(o->args[0]));
        print_json(j);
    } else {
        printf("pool %s deleted, %u leases released\n", o->args[0],
               (unsigned)((const Ipam__V1__DeletePoolResponse *)resp)->released_leases);
    }
    return GRPC_STATUS_OK;
}

/* Exits 0 only when the server is SERVING. */
static int print_health(const ProtobufCMessage *resp, const struct opts *o)
{
    const Grpc__Health__V1__HealthCheckResponse *r =
        (const Grpc__Health__V1__HealthCheckResponse *)resp;
    if (o->output == OUT_JSON)
        print_json(message_json(resp));
    else
        printf("%s\n",
               enum_name(&grpc__health__v1__health_check_response__serving_status__descriptor,
                         r->status));
    return r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0 : 1;
}

/* ---- the subcommand table ------------------------------------------------------ */

static const command commands[] = {
    {.group = "pool",
     .name = "apply",
     .args = {"NAME"},
     .flags = {REQ(F_BLOCK), OPT(F_ORDER), OPT(F_SKIP_END_IPS), OPT(F_AVOID_BUGGY_IPS),
               OPT(F_ALLOW_SHARE), OPT(F_SPACE)},
     .summary = "create a pool, or replace the pool of that name",
     .method = IPAM_METHOD_APPLY_POOL,
     .build = build_pool_apply,
     .result = "pool"},
    {.group = "pool",
     .name = "get",
     .args = {"NAME"},
     .summary = "show a pool",
     .method = IPAM_METHOD_GET_POOL,
     .build = build_pool_get,
     .result = "pool"},
    {.group = "pool",
     .name = "list",
     .summary = "show every pool",
     .method = IPAM_METHOD_LIST_POOLS,
     .result = "pools"},
    {.group = "pool",
     .name = "delete",
     .args = {"NAME"},
     .flags = {OPT(F_FORCE)},
     .summary = "delete a pool (--force: and release its leases)",
     .method = IPAM_METHOD_DELETE_POOL,
     .build = build_pool_delete,
     .print = print_pool_deleted},
    {.name = "allocate",
     .flags = {REQ(F_POOL), REQ(F_OWNER), OPT(F_ADDRESS), OPT(F_FAMILY), OPT(F_PRIMARY), OPT(F_TTL),
               OPT(F_LABEL), OPT(F_PORT), OPT(F_SHARING_KEY), OPT(F_SPACE)},
     .summary = "give the owner a lease (idempotent); --pool '' with --address reserves "
                "statically",
     .method = IPAM_METHOD_ALLOCATE,
     .build = build_allocate,
     .result = "lease"},
    {.name = "release",
     .flags = {REQ(F_OWNER)},
     .summary = "release the owner's lease",
     .method = IPAM_METHOD_RELEASE,
     .build = build_release,
     .result = "lease",
     .result_optional = true},
    {.name = "renew",
     .flags = {REQ(F_OWNER), OPT(F_TTL)},
     .summary = "push the lease's expiry to now + ttl (the lease's own ttl unless given)",
     .method = IPAM_METHOD_RENEW,
     .build = build_renew,
     .result = "lease"},
    {.group = "lease",
     .name = "get",
     .args = {"OWNER"},
     .summary = "show the owner's lease",
     .method = IPAM_METHOD_GET_LEASE,
     .build = build_lease_get,
     .result = "lease"},
    {.group = "lease",
     .name = "list",
     .flags = {OPT(F_POOL), OPT(F_OWNER_PREFIX), OPT(F_LABEL)},
     .summary = "show leases, following every page",
     .method = IPAM_METHOD_LIST_LEASES,
     .build = build_lease_list,
     .run = cli_run_lease_list},
    {.name = "watch",
     .flags = {OPT(F_FROM_REVISION)},
     .summary = "print pool and lease events until interrupted or the stream ends",
     .until_interrupted = true,
     .method = IPAM_METHOD_WATCH,
     .build = build_watch,
     .run = cli_run_watch},
    {.name = "stats",
     .summary = "show every pool's use per family: size, used, free, a bar",
     .method = IPAM_METHOD_LIST_POOLS,
     .print = cli_print_stats},
    {.name = "health",
     .summary = "print the server's health; exit 0 only when SERVING",
     .method = IPAM_METHOD_HEALTH_CHECK,
     .print = print_health},
};

/* ipamctl reports every failure once, from the call's status; gRPC's own
 * lines (a failed TLS handshake, say) would only repeat it. */
static void grpc_log_quiet(gpr_log_func_args *a)
{
    (void)a;
}

int main(int argc, char **argv)
{
    struct opts o = {.output = OUT_TABLE};
    const char *env = getenv("IPAMD_ADDR");
    o.server = env != NULL && env[0] != '\0' ? env : DEFAULT_SERVER;
    const command *cmd =
        cli_parse(argc, argv, commands, sizeof(commands) / sizeof(commands[0]), &o);

    if (cmd->until_interrupted && cli_watch_signals() != 0) {
        fputs("ipamctl: cannot start the signal thread\n", stderr);
        opts_free(&o);
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    if (getenv("GRPC_VERBOSITY") == NULL && getenv("GRPC_TRACE") == NULL)
        gpr_set_log_function(grpc_log_quiet);
    cli_tls_from_env(&o);
    ipam_tls tls = {o.tls_ca, o.tls_cert, o.tls_key, o.tls_server_name};
    bool use_tls =
        o.tls_ca != NULL || o.tls_cert != NULL || o.tls_key != NULL || o.tls_server_name != NULL;
    char *msg = NULL;
    ipam_client *c = ipam_client_open_tls(o.server, use_tls ? &tls : NULL, &msg);
    if (c == NULL) {
        if (msg == NULL)
            out_of_memory();
        /* A TLS file named by a flag or the environment is unusable: a usage error. */
        fprintf(stderr, "ipamctl: %s\n", msg);
        free(msg);
        opts_free(&o);
        return EXIT_USAGE;
    }
    int rc = (cmd->run != NULL ? cmd->run : cli_run_unary)(c, cmd, &o);
    fflush(stdout);
    ipam_client_close(c);
    opts_free(&o);
    return rc;
}
