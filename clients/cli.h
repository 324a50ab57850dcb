/* ipamctl's shared vocabulary: the options a command line sets and the
 * subcommand table's entries, which say both how a subcommand is spelled
 * (read by cli_flags.c for parsing and usage text) and what it does (read by
 * cli_run.c). Option values point into argv, which outlives them; the lists
 * are owned by struct opts and freed by opts_free(). */
#ifndef IPAMCTL_CLI_H
#define IPAMCTL_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli_util.h"
#include "ipam/client.h"

#define DEFAULT_SERVER "127.0.0.1:50051"

typedef struct {
    const char **v;
    size_t n;
} strlist;

typedef struct {
    char *key;         /* owned */
    const char *value; /* points into argv */
} kv;

typedef struct {
    kv *v;
    size_t n;
} kvlist;

typedef struct {
    char protocol[8]; /* upper case */
    uint32_t port;
} portspec;

typedef struct {
    portspec *v;
    size_t n;
} portlist;

enum { OUT_TABLE, OUT_JSON };

struct opts {
    const char *server;
    int output;
    const char *args[2];
    size_t nargs;
    strlist blocks, addresses;
    int order, family, primary;
    bool skip_end_ips, avoid_buggy_ips, allow_share, force;
    const char *space, *pool, *owner, *sharing_key, *owner_prefix;
    uint32_t ttl;
    uint64_t from_revision;
    kvlist labels;
    portlist ports;
    /* TLS to a host:port server; from flags, else $IPAMCTL_TLS_* (see main). */
    const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
};

/* Every flag, indexing the flag table of cli_flags.c. */
enum {
    F_NONE, /* ends a command's flag list */
    F_SERVER,
    F_OUTPUT,
    F_BLOCK,
    F_ORDER,
    F_SKIP_END_IPS,
    F_AVOID_BUGGY_IPS,
    F_ALLOW_SHARE,
    F_SPACE,
    F_FORCE,
    F_POOL,
    F_OWNER,
    F_ADDRESS,
    F_FAMILY,
    F_PRIMARY,
    F_TTL,
    F_LABEL,
    F_PORT,
    F_SHARING_KEY,
    F_OWNER_PREFIX,
    F_FROM_REVISION,
    F_TLS_CA,
    F_TLS_CERT,
    F_TLS_KEY,
    F_TLS_SERVER_NAME,
    F_COUNT
};

typedef struct {
    int id;
    bool required;
} cmd_flag;

#define REQ(id)                                                                                    \
    {                                                                                              \
        id, true                                                                                   \
    }
#define OPT(id)                                                                                    \
    {                                                                                              \
        id, false                                                                                  \
    }
#define MAX_CMD_FLAGS 12

typedef struct command command;

struct command {
    /* How it is spelled. */
    const char *group; /* "pool", or NULL for a one-word subcommand */
    const char *name;
    const char *args[2]; /* positional arguments, NULL-terminated */
    cmd_flag flags[MAX_CMD_FLAGS];
    const char *summary;
    bool until_interrupted; /* takes SIGINT/SIGTERM as "stop" */

    /* What it does: call method with a request that build fills in from the
     * options (what it allocates belongs to the arena), then print the
     * response's field named result (a Pool or a Lease, or a list of them;
     * its absence is an error unless result_optional), or hand the response
     * to print, which returns the exit status. run replaces all of that for
     * a subcommand that is more than one call (NULL: cli_run_unary). */
    ipam_method_id method;
    void (*build)(ProtobufCMessage *req, const struct opts *o, arena *a);
    const char *result;
    bool result_optional;
    int (*print)(const ProtobufCMessage *resp, const struct opts *o);
    int (*run)(ipam_client *c, const command *cmd, const struct opts *o);
};

#endif
