/* The RPC methods of ipamd: one table from method path to handler.
 *
 * A handler reads its decoded request, acts on the state and builds its reply
 * in the context's arena (valid until the arena is freed). It returns IPAM_OK
 * with *reply set, or an error with the status filled in; a failing handler
 * has changed nothing. Kinds tell the transport how to schedule a call:
 * writes run at once and are answered after their batch commits; reads run
 * after the commit so they only see durable state; streams (Watch,
 * Health/Watch, and server reflection's bidirectional stream, whose requests
 * `input' decodes) are served by the transport itself. */
#ifndef IPAMD_API_H
#define IPAMD_API_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>

#include "codec.h"
#include "state.h"

enum api_kind { API_READ, API_WRITE, API_WATCH, API_HEALTH_WATCH, API_REFLECTION };

struct api_ctx {
    struct state *state;
    struct arena arena;
    bool serving; /* health status */
};

typedef enum ipam_err (*api_handler)(struct api_ctx *c, const ProtobufCMessage *req,
                                     ProtobufCMessage **reply, struct ipam_status *st);

struct api_method {
    const char *path; /* "/ipam.v1.Ipam/Allocate" */
    enum api_kind kind;
    api_handler handler; /* NULL for streams */
    const ProtobufCMessageDescriptor *input;
};

extern const struct api_method api_methods[];
extern const size_t api_nmethods;

/* The names the health service answers for. */
bool api_health_known(const char *service);

#endif
